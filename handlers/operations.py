"""The operations, each as parse -> run -> respond, in the model's words.

An operation reads one request into a tensor of items (`parse`), runs the model
on a chunk of items that may come from many requests (`forward`), and writes
its request's answer from that request's slice of each model output (`respond`).
The batching around them lives in `handlers.engine`. Each operation loads only
the TorchScript file it needs, named by the export contract
(`training/export.py`): encode needs `encoder.pt`, decode and sample need
`decoder.pt`. A VAE encoder has two outputs (z_mean, z_log_var), the other
modules one. The `score` operation (both modules) is in `handlers.scoring`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from handlers import images, readers, v2_read, writers
from handlers.calibration import kl_nats
from handlers.errors import RequestError
from handlers.inputs import read_image_tensor, read_images
from handlers.limits import Limits
from handlers.metrics import Recorder
from handlers.model import FILES, MANIFEST, ModelInfo, load_module  # noqa: F401 (re-exported)
from handlers.readers import RawRequest
from handlers.schemas import DecodeRequest, EncodeRequest, SampleRequest
from handlers.v2_read import Tensor
from handlers.v2_schemas import DecodeParameters, EncodeParameters, SampleParameters


@dataclass
class Parsed:
    """One valid request: its items as a float32 CPU tensor, plus what respond needs."""

    x: torch.Tensor
    body: BaseModel | None = None  # the JSON body or the v2 parameters; None for a raw image
    seed: int | None = None  # sample seeds (encode with sample: true, and sample)
    converted_from: list[dict | None] = field(default_factory=list)  # encode, per item
    # how the model runs for this request (`Operation.forward`'s `variant`): requests of
    # one batch run together per variant; None for every operation but score's modes
    variant: str | None = None

    @property
    def items(self) -> int:
        return len(self.x)


Outputs = tuple[torch.Tensor, ...]  # the model's outputs, one tensor each (first dim: items)


def _seed(requested: int | None) -> int:
    return requested if requested is not None else secrets.randbelow(2**63)


def _normal(seed: int, n: int, dim: int) -> torch.Tensor:
    """eps ~ N(0, I), (n, dim), a function of the seed only (CPU generator)."""
    return torch.randn((n, dim), generator=torch.Generator().manual_seed(seed))


def _images(outputs: Outputs, fmt: str, scale: float) -> list[dict]:
    """A decoder's one output, (n, 1, H, W) in [0, 1] -> n image predictions."""
    (pixels,) = outputs
    return writers.write_images(pixels[:, 0].numpy(), fmt, scale)


def _image_tensor(outputs: Outputs, datatype: str, scale: float) -> np.ndarray:
    """A decoder's one output -> the v2 "image" (n, H, W): UINT8 as the PNG's pixels, or FP32."""
    pixels = outputs[0][:, 0].numpy()
    if datatype == "UINT8":
        return images.to_uint8(pixels, scale)
    return np.clip(pixels, 0.0, 1.0)


class Operation:
    name = ""

    def __init__(self, info: ModelInfo, module, limits: Limits) -> None:
        self.info, self.module, self.limits = info, module, limits

    def parse(self, raw: RawRequest) -> Parsed:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, variant: str | None = None) -> Any:
        """The model on a chunk of items (all of one `Parsed.variant`): a tensor, or a tuple."""
        return self.module(x)

    def example(self, n: int) -> torch.Tensor:
        """A valid model input of n items (for warm-up): latents; Encode overrides."""
        return torch.zeros(n, self.info.latent_dim)

    def respond(self, parsed: Parsed, outputs: Outputs) -> str:
        """This request's slice of each model output -> its JSON answer (text)."""
        raise NotImplementedError

    # The Open Inference Protocol (handlers.v2_read / v2_write do the wire).
    def parse_tensors(self, inputs: dict[str, Tensor], params: dict) -> Parsed:
        """A v2 request's named input tensors and parameters -> the same `Parsed` as `parse`."""
        raise NotImplementedError

    def output_names(self, parsed: Parsed) -> tuple[str, ...]:
        """The v2 outputs this request gets, in order."""
        return ("image",)

    def outputs(self, parsed: Parsed, outputs: Outputs) -> tuple[dict[str, np.ndarray], dict]:
        """This request's slice of each model output -> its named v2 outputs, parameters."""
        raise NotImplementedError

    def observe(self, outputs: Outputs, rec: Recorder) -> None:
        """Record operation-specific metrics over the answered items."""


class Encode(Operation):
    name = "encode"

    def parse(self, raw: RawRequest) -> Parsed:
        x, req, converted = read_images(self.info, self.limits, raw, EncodeRequest)
        if req is None:
            return Parsed(x, converted_from=converted)
        self._check_sample(req.sample, "sample")
        seed = _seed(req.seed) if req.sample else None
        return Parsed(x, req, seed, converted)

    def _check_sample(self, sample: bool, field: str) -> None:
        if sample and self.info.kind != "vae":
            raise RequestError(
                "unsupported",
                field,
                f"{self.info.name} is an AE (a deterministic encoder); sample needs a VAE",
            )

    def parse_tensors(self, inputs: dict[str, Tensor], params: dict) -> Parsed:
        p = v2_read.read_parameters(params, EncodeParameters)
        self._check_sample(p.sample, "parameter 'sample'")
        x = read_image_tensor(self.info, self.limits, inputs, self.name)
        return Parsed(x, p, _seed(p.seed) if p.sample else None)

    def output_names(self, parsed: Parsed) -> tuple[str, ...]:
        vae = ("z_log_var",) if self.info.kind == "vae" else ()
        return ("z_mean", *vae, *(("z",) if parsed.seed is not None else ()))

    def outputs(self, parsed: Parsed, outputs: Outputs) -> tuple[dict[str, np.ndarray], dict]:
        named = dict(zip(("z_mean", "z_log_var"), (t.numpy() for t in outputs), strict=False))
        if parsed.seed is None:
            return named, {}
        named["z"] = self._z(parsed.seed, outputs).numpy()
        return named, {"seed": parsed.seed}

    def _z(self, seed: int, outputs: Outputs) -> torch.Tensor:
        """z = z_mean + exp(z_log_var / 2) * eps, eps a function of the seed."""
        eps = _normal(seed, len(outputs[0]), self.info.latent_dim)
        return outputs[0] + torch.exp(0.5 * outputs[1]) * eps

    def example(self, n: int) -> torch.Tensor:
        return torch.zeros(n, 1, *self.info.image_hw)

    def respond(self, parsed: Parsed, outputs: Outputs) -> str:
        # Written as text, one %-format per item: the floats are most of the answer
        # and json.dumps of float lists was the costliest step of encode.
        dim, vae = self.info.latent_dim, self.info.kind == "vae"
        # per item: z_mean, then z_log_var (VAE), as one row
        rows, spec = writers.printable_floats(torch.cat(outputs, dim=1).numpy())
        vec = writers.float_array_format(dim, spec)
        item = '{"z_mean":' + vec + ',"z_log_var":' + (vec if vae else "null")
        item += ',"converted_from":%s%s}'
        convs = ["null" if c is None else writers.write_json(c) for c in parsed.converted_from]
        zs, tail = [""] * len(rows), ""
        if parsed.seed is not None:
            z = self._z(parsed.seed, outputs)
            zs = [',"z":' + row for row in writers.write_float_arrays(z.numpy())]
            tail = f',"seed":{parsed.seed}'
        preds = ",".join(
            item % (*row, conv, zi) for row, conv, zi in zip(rows, convs, zs, strict=True)
        )
        return f'{{"predictions":[{preds}]{tail}}}'

    def observe(self, outputs: Outputs, rec: Recorder) -> None:
        mean = outputs[0].double()
        norms = mean.norm(dim=1)
        rec.add("latentserve_encode_z_mean_norm_total", float(norms.sum()))
        rec.add("latentserve_encode_batch_z_mean_norm", float(norms.mean()))
        if self.info.kind == "vae":
            kl = kl_nats(outputs[0], outputs[1])
            rec.add("latentserve_encode_kl_nats_total", float(kl.sum()))
            rec.add("latentserve_encode_batch_kl_nats", float(kl.mean()))


class Decode(Operation):
    name = "decode"

    def parse(self, raw: RawRequest) -> Parsed:
        if readers.is_image_body(raw):
            raise RequestError("unsupported_media_type", "body", "decode takes JSON latents")
        req = readers.read_json(raw, DecodeRequest, self.limits)
        dim, bound = self.info.latent_dim, self.limits.max_abs_latent
        rows = []
        for i, inst in enumerate(req.instances):
            f = f"instances[{i}].z"
            if len(inst.z) != dim:
                raise RequestError(
                    "wrong_latent_dim",
                    f,
                    f"expected {dim} values (the model's latent_dim), got {len(inst.z)}",
                )
            arr = np.asarray(inst.z, dtype=np.float64)
            readers.check_range(arr, (-bound, bound), f)
            rows.append(arr)
        return Parsed(torch.from_numpy(np.stack(rows).astype(np.float32)), req)

    def respond(self, parsed: Parsed, outputs: Outputs) -> str:
        predictions = _images(outputs, parsed.body.format, self.info.scale)
        return writers.write_json({"predictions": predictions})

    def parse_tensors(self, inputs: dict[str, Tensor], params: dict) -> Parsed:
        p = v2_read.read_parameters(params, DecodeParameters)
        t = v2_read.take_inputs(inputs, {"z": ("FP32", "FP64")}, self.name)["z"]
        dim, shape = self.info.latent_dim, t.array.shape
        if len(shape) != 2 or shape[1] != dim:
            raise RequestError(
                "wrong_latent_dim",
                "input 'z'",
                f"shape {list(shape)}; expected [N,{dim}] ({dim}: the model's latent_dim)",
            )
        v2_read.check_items(shape[0], self.limits.max_items, "z")
        bound = self.limits.max_abs_latent
        readers.check_range(t.array, (-bound, bound), "input 'z'")
        return Parsed(torch.from_numpy(t.array.astype(np.float32)), p)

    def outputs(self, parsed: Parsed, outputs: Outputs) -> tuple[dict[str, np.ndarray], dict]:
        return {"image": _image_tensor(outputs, parsed.body.image_datatype, self.info.scale)}, {}


class Sample(Operation):
    name = "sample"

    def __init__(self, info: ModelInfo, module, limits: Limits) -> None:
        super().__init__(info, module, limits)
        # z = mean + temperature * eps @ F.T with the manifest's factor F: the export
        # computes it once (training/prior.py), and the README's figures use the same
        self._mean = torch.from_numpy(info.prior_mean)
        self._factor = torch.from_numpy(info.prior_factor)

    def parse(self, raw: RawRequest) -> Parsed:
        if readers.is_image_body(raw):
            raise RequestError("unsupported_media_type", "body", "sample takes a JSON object")
        return self._prior(readers.read_json(raw, SampleRequest, self.limits))

    def parse_tensors(self, inputs: dict[str, Tensor], params: dict) -> Parsed:
        v2_read.take_inputs(inputs, {}, self.name)
        return self._prior(v2_read.read_parameters(params, SampleParameters))

    def _prior(self, req: SampleRequest | SampleParameters) -> Parsed:
        """n latents drawn from the prior with the request's seed and temperature."""
        seed = _seed(req.seed)
        eps = _normal(seed, req.n, self.info.latent_dim).double()
        z = self._mean + req.temperature * eps @ self._factor.T
        return Parsed(z.float(), req, seed)

    def respond(self, parsed: Parsed, outputs: Outputs) -> str:
        req = parsed.body
        return writers.write_json(
            {
                "predictions": _images(outputs, req.format, self.info.scale),
                "seed": parsed.seed,
                "temperature": req.temperature,
            }
        )

    def outputs(self, parsed: Parsed, outputs: Outputs) -> tuple[dict[str, np.ndarray], dict]:
        image = _image_tensor(outputs, parsed.body.image_datatype, self.info.scale)
        return {"image": image}, {"seed": parsed.seed, "temperature": parsed.body.temperature}


# score builds on the classes above, so it is imported after them
from handlers.scoring import Score  # noqa: E402

OPERATIONS: dict[str, type[Operation]] = {
    "encode": Encode,
    "decode": Decode,
    "sample": Sample,
    "score": Score,
}

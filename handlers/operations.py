"""The three operations, each as parse -> run -> respond, in the model's words.

An operation reads one request into a tensor of items (`parse`), runs the model
on a chunk of items that may come from many requests (`forward`), and writes
its request's answer from that request's slice of each model output (`respond`).
The batching around them lives in `handlers.engine`. Each operation loads only
the TorchScript file it needs, named by the export contract
(`training/export.py`): encode needs `encoder.pt`, decode and sample need
`decoder.pt`. A VAE encoder has two outputs (z_mean, z_log_var), the other
modules one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from handlers import images, readers, writers
from handlers.device import Placement
from handlers.errors import RequestError
from handlers.limits import Limits
from handlers.metrics import Recorder
from handlers.readers import RawRequest
from handlers.schemas import DecodeRequest, EncodeRequest, SampleRequest

MANIFEST = "manifest.json"
FILES = {"encode": "encoder.pt", "decode": "decoder.pt", "sample": "decoder.pt"}


@dataclass(frozen=True)
class ModelInfo:
    """What the handlers need from manifest.json, checked once at load."""

    name: str
    kind: str  # ae | vae
    latent_dim: int
    image_hw: tuple[int, int]
    scale: float  # uint8 / scale = model input
    prior_mean: np.ndarray  # (D,)
    prior_factor: np.ndarray  # (D, D): F @ F.T == the prior's cov, computed once at export
    manifest: dict

    @classmethod
    def from_manifest(cls, manifest: dict) -> ModelInfo:
        try:
            kind, dim = manifest["kind"], int(manifest["latent_dim"])
            c, h, w = (int(v) for v in manifest["image_shape"])
            scale = float(manifest["pixel_scaling"]["divide_by"])
            prior = manifest["prior"]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"manifest.json lacks or mangles a required key: {err!r}") from None
        if kind not in ("ae", "vae") or c != 1 or dim < 1:
            raise ValueError(f"unsupported model: kind {kind!r}, channels {c}, latent_dim {dim}")
        if prior.get("type") == "standard_normal":
            mean, factor = np.zeros(dim), np.eye(dim)
        elif prior.get("type") == "gaussian":
            try:
                mean = np.asarray(prior["mean"], dtype=np.float64)
                factor = np.asarray(prior["factor"], dtype=np.float64)
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(
                    f"manifest.json lacks or mangles a required key: prior {err!r} "
                    "(re-export the model: the export writes the prior's sampling factor)"
                ) from None
        else:
            raise ValueError(f"unknown prior type {prior.get('type')!r}")
        if mean.shape != (dim,) or factor.shape != (dim, dim):
            raise ValueError(
                f"prior shapes {mean.shape}, {factor.shape} do not fit latent_dim {dim}"
            )
        return cls(manifest.get("name", "?"), kind, dim, (h, w), scale, mean, factor, manifest)

    @classmethod
    def from_dir(cls, model_dir: Path) -> ModelInfo:
        return cls.from_manifest(json.loads((Path(model_dir) / MANIFEST).read_text()))


def load_script(model_dir: Path, info: ModelInfo, file: str, placement: Placement):
    """torch.jit.load one export after checking its sha256 against the manifest."""
    path = Path(model_dir) / file
    want = info.manifest.get("files", {}).get(file)
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    if want is not None and want != got:
        raise ValueError(f"{file}: sha256 {got} does not match the manifest's {want}")
    with warnings.catch_warnings():  # TorchScript is the export contract (training/export.py)
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        module = torch.jit.load(str(path), map_location=placement.device).eval()
    return module.half() if placement.dtype == torch.float16 else module


@dataclass
class Parsed:
    """One valid request: its items as a float32 CPU tensor, plus what respond needs."""

    x: torch.Tensor
    body: BaseModel | None = None  # the validated JSON body; None for a raw image
    seed: int | None = None  # sample seeds (encode with sample: true, and sample)
    converted_from: list[dict | None] = field(default_factory=list)  # encode, per item

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


class Operation:
    name = ""

    def __init__(self, info: ModelInfo, module, limits: Limits) -> None:
        self.info, self.module, self.limits = info, module, limits

    def parse(self, raw: RawRequest) -> Parsed:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> Any:
        """The model on a chunk of items: a tensor, or a tuple of them."""
        return self.module(x)

    def example(self, n: int) -> torch.Tensor:
        """A valid model input of n items (for warm-up): latents; Encode overrides."""
        return torch.zeros(n, self.info.latent_dim)

    def respond(self, parsed: Parsed, outputs: Outputs) -> str:
        """This request's slice of each model output -> its JSON answer (text)."""
        raise NotImplementedError

    def observe(self, outputs: Outputs, rec: Recorder) -> None:
        """Record operation-specific metrics over the answered items."""


class Encode(Operation):
    name = "encode"

    def parse(self, raw: RawRequest) -> Parsed:
        hw, scale = self.info.image_hw, self.info.scale
        if readers.is_image_body(raw):
            if not isinstance(raw.body, bytes | bytearray):
                raise RequestError("bad_image", "body", "an image body must be binary")
            gray, conv = images.read_image(bytes(raw.body), hw, "body", self.limits)
            x = torch.from_numpy(images.scale_pixels(gray, scale)[None, None])
            return Parsed(x, converted_from=[conv])
        req = readers.read_json(raw, EncodeRequest, self.limits)
        if req.sample and self.info.kind != "vae":
            raise RequestError(
                "unsupported",
                "sample",
                f"{self.info.name} is an AE (a deterministic encoder); sample needs a VAE",
            )
        # images are read as uint8 rows, scaled together at the end; pixels come scaled
        x = np.empty((len(req.instances), *hw), dtype=np.float32)
        image_rows, converted = [], []
        for i, inst in enumerate(req.instances):
            if inst.image_b64 is not None:
                f = f"instances[{i}].image_b64"
                data = readers.read_base64(inst.image_b64, f, self.limits)
                x[i], conv = images.read_image(data, hw, f, self.limits)
                image_rows.append(i)
            else:
                f = f"instances[{i}].pixels"
                x[i] = readers.read_pixels(inst.pixels, hw, self.limits.pixel_range, f)
                conv = None
            converted.append(conv)
        if len(image_rows) == len(x):
            x = images.scale_pixels(x, scale)
        elif image_rows:
            x[image_rows] = images.scale_pixels(x[image_rows], scale)
        seed = _seed(req.seed) if req.sample else None
        return Parsed(torch.from_numpy(x[:, None]), req, seed, converted)

    def example(self, n: int) -> torch.Tensor:
        return torch.zeros(n, 1, *self.info.image_hw)

    def respond(self, parsed: Parsed, outputs: Outputs) -> str:
        # Written as text, one %-format per item: the floats are most of the answer
        # and json.dumps of float lists was the costliest step of encode.
        dim, vae = self.info.latent_dim, self.info.kind == "vae"
        z_mean = outputs[0]
        # per item: z_mean, then z_log_var (VAE), as one row
        rows, spec = writers.printable_floats(torch.cat(outputs, dim=1).numpy())
        vec = writers.float_array_format(dim, spec)
        item = '{"z_mean":' + vec + ',"z_log_var":' + (vec if vae else "null")
        item += ',"converted_from":%s%s}'
        convs = ["null" if c is None else writers.write_json(c) for c in parsed.converted_from]
        zs, tail = [""] * len(rows), ""
        if parsed.seed is not None:
            eps = _normal(parsed.seed, len(rows), dim)
            z = z_mean + torch.exp(0.5 * outputs[1]) * eps
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
            lv = outputs[1].double()
            kl = (0.5 * (mean.pow(2) + lv.exp() - 1.0 - lv).sum(dim=1)).clamp_min(0.0)
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
        req = readers.read_json(raw, SampleRequest, self.limits)
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


OPERATIONS: dict[str, type[Operation]] = {"encode": Encode, "decode": Decode, "sample": Sample}

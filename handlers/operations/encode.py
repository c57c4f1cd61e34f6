"""encode: images -> z_mean, z_log_var (a VAE) or z (an AE); optionally z sampled with a seed."""

from __future__ import annotations

import numpy as np
import torch

from handlers.calibration import kl_nats
from handlers.errors import RequestError
from handlers.metrics import Recorder
from handlers.operations.base import Operation, Outputs, Parsed, pick_seed, standard_normal
from handlers.wire import json_write, v2_read
from handlers.wire.inputs import read_image_tensor, read_images
from handlers.wire.json_schemas import EncodeRequest
from handlers.wire.request import RawRequest
from handlers.wire.v2_read import Tensor
from handlers.wire.v2_schemas import EncodeParameters


class Encode(Operation):
    name = "encode"

    def parse(self, raw: RawRequest) -> Parsed:
        x, req, converted = read_images(self.info, self.limits, raw, EncodeRequest)
        if req is None:
            return Parsed(x, converted_from=converted)
        self._check_sample(req.sample, "sample")
        seed = pick_seed(req.seed) if req.sample else None
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
        return Parsed(x, p, pick_seed(p.seed) if p.sample else None)

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
        eps = standard_normal(seed, len(outputs[0]), self.info.latent_dim)
        return outputs[0] + torch.exp(0.5 * outputs[1]) * eps

    def example(self, n: int) -> torch.Tensor:
        return torch.zeros(n, *self.info.image_shape)

    def respond(self, parsed: Parsed, outputs: Outputs) -> str:
        # Written as text, one %-format per item: the floats are most of the answer
        # and json.dumps of float lists was the costliest step of encode.
        dim, vae = self.info.latent_dim, self.info.kind == "vae"
        # per item: z_mean, then z_log_var (VAE), as one row
        rows, spec = json_write.printable_floats(torch.cat(outputs, dim=1).numpy())
        vec = json_write.float_array_format(dim, spec)
        item = '{"z_mean":' + vec + ',"z_log_var":' + (vec if vae else "null")
        item += ',"converted_from":%s%s}'
        convs = ["null" if c is None else json_write.write_json(c) for c in parsed.converted_from]
        zs, tail = [""] * len(rows), ""
        if parsed.seed is not None:
            z = self._z(parsed.seed, outputs)
            zs = [',"z":' + row for row in json_write.write_float_arrays(z.numpy())]
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

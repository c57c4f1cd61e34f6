"""decode: latents z -> images."""

from __future__ import annotations

import numpy as np
import torch

from handlers.errors import RequestError
from handlers.operations.base import Operation, Outputs, Parsed, image_predictions, image_tensor
from handlers.wire import json_read, json_write, v2_read
from handlers.wire.json_schemas import DecodeRequest
from handlers.wire.request import RawRequest, check_count, check_range, is_image_body
from handlers.wire.v2_read import Tensor
from handlers.wire.v2_schemas import DecodeParameters


class Decode(Operation):
    name = "decode"

    def parse(self, raw: RawRequest) -> Parsed:
        if is_image_body(raw):
            raise RequestError("unsupported_media_type", "body", "decode takes JSON latents")
        req = json_read.read_json(raw, DecodeRequest, self.limits)
        check_count(len(req.instances), self.limits.max_items, "instances")
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
            check_range(arr, (-bound, bound), f)
            rows.append(arr)
        return Parsed(torch.from_numpy(np.stack(rows).astype(np.float32)), req)

    def respond(self, parsed: Parsed, outputs: Outputs) -> str:
        predictions = image_predictions(outputs, parsed.body.format, self.info.scale)
        return json_write.write_json({"predictions": predictions})

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
        check_range(t.array, (-bound, bound), "input 'z'")
        return Parsed(torch.from_numpy(t.array.astype(np.float32)), p)

    def outputs(self, parsed: Parsed, outputs: Outputs) -> tuple[dict[str, np.ndarray], dict]:
        return {"image": image_tensor(outputs, parsed.body.image_datatype, self.info.scale)}, {}

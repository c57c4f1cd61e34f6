"""sample: n latents from the prior with a seed and temperature -> images."""

from __future__ import annotations

import numpy as np
import torch

from handlers.errors import RequestError
from handlers.limits import Limits
from handlers.manifest import ModelInfo
from handlers.operations.base import (
    Operation,
    Outputs,
    Parsed,
    image_predictions,
    image_tensor,
    pick_seed,
    standard_normal,
)
from handlers.wire import json_read, json_write, v2_read
from handlers.wire.json_schemas import SampleRequest
from handlers.wire.request import RawRequest, check_count, is_image_body
from handlers.wire.v2_read import Tensor
from handlers.wire.v2_schemas import SampleParameters


class Sample(Operation):
    name = "sample"

    def __init__(self, info: ModelInfo, module, limits: Limits) -> None:
        super().__init__(info, module, limits)
        # z = mean + temperature * eps @ F.T with the manifest's factor F: the export
        # computes it once (training/prior.py), and the README's figures use the same
        # None: the manifest has no prior (an AE registered without data), a 400 per request
        self._mean = None if info.prior_mean is None else torch.from_numpy(info.prior_mean)
        self._factor = None if info.prior_factor is None else torch.from_numpy(info.prior_factor)

    def parse(self, raw: RawRequest) -> Parsed:
        if is_image_body(raw):
            raise RequestError("unsupported_media_type", "body", "sample takes a JSON object")
        return self._prior(json_read.read_json(raw, SampleRequest, self.limits))

    def parse_tensors(self, inputs: dict[str, Tensor], params: dict) -> Parsed:
        v2_read.take_inputs(inputs, {}, self.name)
        return self._prior(v2_read.read_parameters(params, SampleParameters))

    def _prior(self, req: SampleRequest | SampleParameters) -> Parsed:
        """n latents drawn from the prior with the request's seed and temperature."""
        if self._mean is None:
            raise RequestError(
                "unsupported",
                "model",
                f"{self.info.name} is an AE without a sampling prior: register it with --data "
                "(python -m serving.register ... --data IMAGES) to fit one",
            )
        check_count(req.n, self.limits.max_n, "n")
        seed = pick_seed(req.seed)
        eps = standard_normal(seed, req.n, self.info.latent_dim).double()
        z = self._mean + req.temperature * eps @ self._factor.T
        return Parsed(z.float(), req, seed)

    def respond(self, parsed: Parsed, outputs: Outputs) -> str:
        req = parsed.body
        return json_write.write_json(
            {
                "predictions": image_predictions(outputs, req.format, self.info.scale),
                "seed": parsed.seed,
                "temperature": req.temperature,
            }
        )

    def outputs(self, parsed: Parsed, outputs: Outputs) -> tuple[dict[str, np.ndarray], dict]:
        image = image_tensor(outputs, parsed.body.image_datatype, self.info.scale)
        return {"image": image}, {"seed": parsed.seed, "temperature": parsed.body.temperature}

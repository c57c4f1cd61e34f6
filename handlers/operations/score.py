"""The `score` operation: how unusual each image is for the model, with calibrated p-values.

Images come in as encode's do (`handlers.wire.inputs`, both wires). In `mode: full`
(the default) the model runs the encoder and, at z = z_mean, the decoder: one
pass each per chunk. In `mode: latent` only the encoder runs, for the latent
score alone (a batch runs each mode's requests together: `Parsed.variant`).
The statistics, the scores and their p-values are `handlers.calibration`'s,
against the held-out quantiles in the manifest; `is_outlier` is p < the
request's `fpr` (default 1 %). The mode's primary score (mahalanobis; latent)
gives the top-level `is_outlier` of each item and feeds the metrics: a
histogram of its p-values and a counter of items it flags at the default
rate, whatever a request asked, so that a shift in incoming data shows on a
dashboard (both are uniform on in-distribution data, whichever the score).
"""

from __future__ import annotations

import numpy as np
import torch

from handlers.calibration import (
    FLAG_FPR,
    LATENT,
    LN2,
    PRIMARY,
    Calibration,
    kl_nats,
    latent_code,
    run_model,
    score_names,
    scores_of,
    stat_names,
)
from handlers.errors import RequestError
from handlers.limits import Limits
from handlers.manifest import ModelInfo
from handlers.metrics import Recorder
from handlers.operations.base import Operation, Outputs, Parsed, channels_last
from handlers.wire import images, v2_read
from handlers.wire.inputs import read_image_tensor, read_images
from handlers.wire.json_schemas import ScoreRequest
from handlers.wire.json_write import json_number, write_json
from handlers.wire.request import RawRequest
from handlers.wire.v2_read import Tensor
from handlers.wire.v2_schemas import ScoreParameters

_STATS = ("recon_nats", "kl_nats", "neg_elbo_nats", "bits_per_dim", "png_bits")


class Score(Operation):
    name = "score"

    def __init__(self, info: ModelInfo, module, limits: Limits) -> None:
        super().__init__(info, module, limits)
        # a model registered without data has no calibration: its requests get a 400
        has = "calibration" in info.manifest
        self.cal = Calibration.from_manifest(info.manifest) if has else None
        self.stats, self.scores = stat_names(info.kind), score_names(info.kind)
        self.vae = info.kind == "vae"
        self.pixels = info.image_shape[0] * info.image_shape[1] * info.image_shape[2]

    # ---- parse ------------------------------------------------------------------
    def parse(self, raw: RawRequest) -> Parsed:
        x, req, converted = read_images(self.info, self.limits, raw, ScoreRequest)
        body = req if req is not None else ScoreParameters()
        self._check(body, "error_map")
        return Parsed(x, body, converted_from=converted, variant=body.mode)

    def parse_tensors(self, inputs: dict[str, Tensor], params: dict) -> Parsed:
        p = v2_read.read_parameters(params, ScoreParameters)
        self._check(p, "parameter 'error_map'")
        x = read_image_tensor(self.info, self.limits, inputs, self.name)
        return Parsed(x, p, variant=p.mode)

    def _check(self, body, field: str) -> None:
        if self.cal is None:
            raise RequestError(
                "unsupported",
                "model",
                f"{self.info.name} has no score calibration: register it with --data "
                "(python -m serving.register ... --data IMAGES) to fit one",
            )
        if body.error_map and body.mode == LATENT:
            raise RequestError(
                "invalid_field", field, "error_map needs a reconstruction: mode full, not latent"
            )

    def example(self, n: int) -> torch.Tensor:
        return torch.zeros(n, *self.info.image_shape)

    # ---- run --------------------------------------------------------------------
    def forward(self, x: torch.Tensor, variant: str | None = None) -> Outputs:
        """A chunk -> full: (statistics (n, len(stats)) in `stat_names` order, the
        encoder's output (n, C), reconstructions); latent: (the encoder's output,)."""
        encoder, decoder = self.module
        if variant == LATENT:
            return (latent_code(encoder(x)),)
        return run_model(encoder, decoder, x, self.info.scale, self.info.kind)

    def names(self, outputs: Outputs) -> tuple[tuple[str, ...], str]:
        """The scores these outputs give, and their primary (the mode's)."""
        return ((LATENT,), LATENT) if _latent(outputs) else (self.scores, PRIMARY)

    def evaluate_outputs(
        self, outputs: Outputs
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Model outputs -> (statistics, scores (n, S), p-values (n, S)), S the `names`."""
        if _latent(outputs):
            (code,) = outputs
            nan = np.full(len(code), np.nan)
            stats = {"recon_nats": nan, "png_bits": nan}
            if self.vae:
                d = self.info.latent_dim
                stats["kl_nats"] = kl_nats(code[:, :d], code[:, d:]).numpy()
            scores = self.cal.latent(code.double().numpy())[:, None]
            return stats, scores, self.cal.p_values(scores, (LATENT,))
        table, code, _ = outputs
        stats = dict(zip(self.stats, table.double().numpy().T, strict=True))
        scores = scores_of(self.info.kind, stats, code.double().numpy(), self.cal)
        return stats, scores, self.cal.p_values(scores)

    def summary(self, stats: dict[str, np.ndarray]) -> np.ndarray:
        """(n, 5): recon_nats, kl_nats, neg_elbo_nats, bits_per_dim, png_bits (NaN: null)."""
        recon = stats["recon_nats"]
        kl = stats["kl_nats"] if self.vae else np.full_like(recon, np.nan)
        total = recon + (kl if self.vae else 0.0)
        elbo = total if self.vae else np.full_like(recon, np.nan)
        return np.stack([recon, kl, elbo, total / (LN2 * self.pixels), stats["png_bits"]], 1)

    # ---- respond ----------------------------------------------------------------
    def respond(self, parsed: Parsed, outputs: Outputs) -> str:
        stats, scores, p = self.evaluate_outputs(outputs)
        names, main = self.names(outputs)
        fpr = parsed.body.fpr
        flags = p < fpr
        summary = self.summary(stats)
        maps = self._error_maps(parsed, outputs) if parsed.body.error_map else None
        converted = parsed.converted_from or [None] * parsed.items
        primary = names.index(main)
        items = []
        for i in range(parsed.items):
            head = ",".join(
                f'"{k}":{"null" if np.isnan(v) else _number(v)}'
                for k, v in zip(_STATS, summary[i], strict=True)
            )
            per = ",".join(
                f'"{s}":{{"score":{_number(scores[i, j])},"p_value":{_number(p[i, j])},'
                f'"is_outlier":{_bool(flags[i, j])}}}'
                for j, s in enumerate(names)
            )
            conv = "null" if converted[i] is None else write_json(converted[i])
            png = "" if maps is None else images.write_png(maps[i], self.info.scale)
            tail = f',"error_map":"{png}"' if png else ""
            items.append(
                f'{{{head},"scores":{{{per}}},"is_outlier":{_bool(flags[i, primary])},'
                f'"converted_from":{conv}{tail}}}'
            )
        return f'{{"predictions":[{",".join(items)}],"fpr":{_number(fpr)},"primary":"{main}"}}'

    def _error_maps(self, parsed: Parsed, outputs: Outputs) -> np.ndarray:
        """(n, H, W) or (n, H, W, C): |x - reconstruction| in [0, 1], per channel."""
        return channels_last((parsed.x - outputs[2].float()).abs())

    # ---- the Open Inference Protocol --------------------------------------------
    def output_names(self, parsed: Parsed) -> tuple[str, ...]:
        if parsed.variant == LATENT:
            return ("kl_nats",) * self.vae + ("scores", "p_values", "is_outlier")
        vae = ("kl_nats", "neg_elbo_nats") if self.vae else ()
        tail = ("error_map",) if parsed.body.error_map else ()
        head = ("recon_nats", *vae, "bits_per_dim", "png_bits")
        return (*head, "scores", "p_values", "is_outlier", *tail)

    def outputs(self, parsed: Parsed, outputs: Outputs) -> tuple[dict[str, np.ndarray], dict]:
        stats, scores, p = self.evaluate_outputs(outputs)
        names, main = self.names(outputs)
        summary = dict(zip(_STATS, self.summary(stats).T.astype(np.float32), strict=True))
        named = {k: summary[k] for k in self.output_names(parsed) if k in summary}
        named |= {
            "scores": scores.astype(np.float32),
            "p_values": p.astype(np.float32),
            "is_outlier": p < parsed.body.fpr,
        }
        if parsed.body.error_map:
            named["error_map"] = images.to_uint8(self._error_maps(parsed, outputs), self.info.scale)
        params = {"fpr": parsed.body.fpr, "scores": ",".join(names), "primary": main}
        return named, params

    # ---- metrics ----------------------------------------------------------------
    def observe(self, outputs: Outputs, rec: Recorder) -> None:
        _, _, p = self.evaluate_outputs(outputs)
        names, main = self.names(outputs)
        primary = p[:, names.index(main)]
        for value in primary.tolist():
            rec.add("latentserve_score_p_value", value)
        rec.add("latentserve_score_flagged_total", int((primary < FLAG_FPR).sum()))


def _latent(outputs: Outputs) -> bool:
    """Mode latent's outputs: the encoder's output alone (full: statistics, it, pixels)."""
    return len(outputs) == 1


def _number(v: float) -> str:
    if not np.isfinite(v):  # not JSON: the engine answers this request with a 500
        raise ValueError("Out of range float values are not JSON compliant")
    return json_number(float(v))


def _bool(v) -> str:
    return "true" if v else "false"

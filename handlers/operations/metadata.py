"""The Open Inference Protocol's model metadata of each operation: its tensors and shapes.

`GET /v2/models/<model>-<op>` answers this document: TorchServe's frontend has
no such route, so every archive carries it as `v2-metadata.json`
(serving/archive.py writes it at build time) and latentserve's frontend agent
(deploy/agent/) serves it. Shapes use -1 for the batch dimension; an image is
[-1, H, W] for a one-channel model and [-1, H, W, C] for a colour one, as the
`image` tensors of requests and answers are (`handlers.wire.inputs`).
`parameters` carries what a client needs to build requests without knowing
the model: kind, latent_dim, image_shape (C, H, W), pixel scaling.
"""

from __future__ import annotations

from handlers.calibration import score_names
from handlers.manifest import ModelInfo
from handlers.wire.inputs import image_dims

FILE = "v2-metadata.json"
PLATFORM = "latentserve"


def _tensor(name: str, datatype: str, *dims: int) -> dict:
    return {"name": name, "datatype": datatype, "shape": [-1, *dims]}


def tensors(info: ModelInfo, operation: str) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of `operation` on this model, as its v2 answers give them.

    encode's `z` comes with parameter sample: true (VAE); score's outputs are mode
    full's (mode latent answers kl_nats, scores, p_values, is_outlier of one score)
    and `error_map` comes with parameter error_map: true.
    """
    d, image = info.latent_dim, image_dims(info.image_shape)
    vae = info.kind == "vae"
    if operation == "encode":
        outs = [_tensor("z_mean", "FP32", d)]
        if vae:
            outs += [_tensor("z_log_var", "FP32", d), _tensor("z", "FP32", d)]
        return [_tensor("image", "UINT8", *image)], outs
    if operation == "decode":
        return [_tensor("z", "FP32", d)], [_tensor("image", "UINT8", *image)]
    if operation == "sample":
        return [], [_tensor("image", "UINT8", *image)]
    if operation == "score":
        stats = ["recon_nats", *(["kl_nats", "neg_elbo_nats"] if vae else []), "bits_per_dim"]
        s = len(score_names(info.kind))
        outs = [_tensor(k, "FP32") for k in (*stats, "png_bits")]
        outs += [_tensor("scores", "FP32", s), _tensor("p_values", "FP32", s)]
        outs += [_tensor("is_outlier", "BOOL", s), _tensor("error_map", "UINT8", *image)]
        return [_tensor("image", "UINT8", *image)], outs
    raise ValueError(f"unknown operation {operation!r}")


def v2_metadata(info: ModelInfo, operation: str, model: str, version: str = "1.0") -> dict:
    """The model metadata document of archive `<model>-<operation>` (`model`: the name it is
    served under, its model_store folder, which the manifest's own `name` need not be)."""
    name = f"{model}-{operation}"
    inputs, outputs = tensors(info, operation)
    return {
        "name": name,
        "versions": [version],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "model": model,
            "operation": operation,
            "kind": info.kind,
            "latent_dim": info.latent_dim,
            "image_shape": list(info.image_shape),
            "pixel_scale": info.scale,
            "has_prior": info.prior_mean is not None,
            "has_calibration": "calibration" in info.manifest,
        },
    }

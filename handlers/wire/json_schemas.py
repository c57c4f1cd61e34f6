"""Request and response schemas (pydantic v2) of the operations.

Requests are validated strictly (no string-to-number coercion, no NaN or
infinity, no unknown fields); structural limits come from `handlers.limits`.
Model-specific checks (image H x W, latent length, value ranges) happen in
`handlers.operations`, which knows the manifest. Responses are built as plain
dicts for speed; the response models here document them (`make schema`) and the
tests validate real answers against them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator
from pydantic_core import PydanticCustomError

from handlers.limits import LIMITS

_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

Format = Literal["png", "array"]


def _pixel_layout(value: Any) -> str:
    """'colour' for H x W x C lists (the first pixel is a list), else 'gray' (H x W)."""
    try:
        return "colour" if isinstance(value[0][0], list) else "gray"
    except (TypeError, IndexError, KeyError):
        return "gray"  # the gray branch's own error then names what is wrong


# H x W (one channel) or H x W x C (colour) values: one branch is validated, chosen by
# the nesting, so an error names one path and is counted once (PIXEL_TAGS leave the path)
Pixels = Annotated[
    Annotated[list[list[float]], Tag("gray")] | Annotated[list[list[list[float]]], Tag("colour")],
    Discriminator(_pixel_layout),
]
PIXEL_TAGS = ("gray", "colour")


def _seed():
    return Field(
        default=None,
        ge=0,
        le=LIMITS.max_seed,
        description="the same seed gives the same answer; drawn at random and returned if omitted",
    )


# ---- requests ---------------------------------------------------------------
class ImageInstance(BaseModel):
    """One image to encode: exactly one of `image_b64` or `pixels`."""

    model_config = _STRICT
    image_b64: str | None = Field(
        default=None,
        description="PNG or JPEG bytes, base64 (a `data:image/...;base64,` prefix is allowed). "
        "Other sizes and colour modes are converted to the model's mode (grayscale or RGB) "
        "and size",
    )
    pixels: Pixels | None = Field(
        default=None,
        description="values in [0, 1] of exactly the model's image shape: H x W for a "
        "one-channel model, H x W x C for a colour one",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageInstance:
        if (self.image_b64 is None) == (self.pixels is None):
            raise PydanticCustomError("one_of", "give exactly one of image_b64 or pixels")
        return self


class EncodeRequest(BaseModel):
    model_config = _STRICT
    instances: list[ImageInstance] = Field(min_length=1, max_length=LIMITS.max_items)
    sample: bool = Field(
        default=False,
        description="VAE only: also return z = z_mean + exp(z_log_var / 2) * eps, eps ~ N(0, I)",
    )
    seed: int | None = _seed()


class LatentInstance(BaseModel):
    model_config = _STRICT
    z: list[float] = Field(
        description=f"latent vector of the model's latent_dim, |z_i| <= {LIMITS.max_abs_latent}"
    )


class DecodeRequest(BaseModel):
    model_config = _STRICT
    instances: list[LatentInstance] = Field(min_length=1, max_length=LIMITS.max_items)
    format: Format = Field(default="png", description="png: base64 PNG; array: H x W floats")


class SampleRequest(BaseModel):
    model_config = _STRICT
    n: int = Field(default=1, ge=1, le=LIMITS.max_n, description="number of images")
    seed: int | None = _seed()
    temperature: float = Field(
        default=1.0,
        ge=0.0,
        le=LIMITS.max_temperature,
        description="scales the prior's spread: z = mean + temperature * F eps (manifest's F)",
    )
    format: Format = "png"


def _fpr():
    return Field(
        default=0.01,
        ge=LIMITS.min_fpr,
        le=LIMITS.max_fpr,
        description="is_outlier is p_value < fpr: the share of in-distribution images flagged",
    )


def _error_map():
    return Field(default=False, description="also return |x - reconstruction| as an image")


def _mode():
    return Field(
        default="full",
        description="full: every score (an encoder and a decoder pass, and a PNG); "
        "latent: the latent score alone, from the encoder only, at about encode's cost",
    )


class ScoreRequest(BaseModel):
    model_config = _STRICT
    instances: list[ImageInstance] = Field(min_length=1, max_length=LIMITS.max_items)
    fpr: float = _fpr()
    error_map: bool = _error_map()
    mode: Literal["full", "latent"] = _mode()


# ---- responses --------------------------------------------------------------
class ConvertedFrom(BaseModel):
    mode: str = Field(description="PIL mode of the upload, e.g. RGB")
    width: int
    height: int


class EncodePrediction(BaseModel):
    z_mean: list[float] = Field(description="VAE: posterior mean; AE: the code z")
    z_log_var: list[float] | None = Field(description="VAE: posterior log-variance; AE: null")
    z: list[float] | None = Field(default=None, description="only with sample: true")
    converted_from: ConvertedFrom | None = Field(
        default=None, description="set when the image was converted to the model's mode/size"
    )


class EncodeResponse(BaseModel):
    predictions: list[EncodePrediction]
    seed: int | None = Field(default=None, description="the seed used, with sample: true")


class ImagePrediction(BaseModel):
    image_b64: str | None = Field(
        default=None, description="format png: base64 PNG, 8-bit gray or RGB (the model's mode)"
    )
    pixels: Pixels | None = Field(
        default=None,
        description="format array: H x W (one channel) or H x W x C floats in [0, 1], 6 decimals",
    )


class DecodeResponse(BaseModel):
    predictions: list[ImagePrediction]


class SampleResponse(BaseModel):
    predictions: list[ImagePrediction]
    seed: int
    temperature: float


class ScoreValue(BaseModel):
    score: float = Field(description="larger is more unusual")
    p_value: float = Field(description="share of held-out in-distribution images scoring >= this")
    is_outlier: bool = Field(description="p_value < fpr")


class ScorePrediction(BaseModel):
    recon_nats: float | None = Field(
        description="-log p(x | z_mean), Bernoulli, summed over pixels; null in mode latent"
    )
    kl_nats: float | None = Field(description="VAE: KL(q(z|x) || N(0, I)); AE: null")
    neg_elbo_nats: float | None = Field(
        description="VAE: recon_nats + kl_nats; AE and mode latent: null"
    )
    bits_per_dim: float | None = Field(
        description="neg_elbo (AE: recon) in bits per pixel; null in mode latent"
    )
    png_bits: float | None = Field(
        description="length of the image as a PNG, in bits; null in mode latent"
    )
    scores: dict[str, ScoreValue] = Field(
        description="mode full: neg_elbo (AE: recon), complexity, mahalanobis, latent; "
        "mode latent: latent"
    )
    is_outlier: bool = Field(
        description="the primary score's is_outlier (mahalanobis; mode latent: latent)"
    )
    converted_from: ConvertedFrom | None = None
    error_map: str | None = Field(
        default=None, description="with error_map: true, base64 PNG of |x - reconstruction|"
    )


class ScoreResponse(BaseModel):
    predictions: list[ScorePrediction]
    fpr: float
    primary: str = Field(description="the score behind each prediction's is_outlier")


class ErrorDetail(BaseModel):
    status: int = Field(description="the HTTP status, 400 for every input error")
    code: str = Field(description="machine-readable reason, see handlers/errors.py CODES")
    field: str = Field(description="JSON path of the offending field, or 'body'")
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


REQUESTS = {
    "encode": EncodeRequest,
    "decode": DecodeRequest,
    "sample": SampleRequest,
    "score": ScoreRequest,
}
RESPONSES = {
    "encode": EncodeResponse,
    "decode": DecodeResponse,
    "sample": SampleResponse,
    "score": ScoreResponse,
}

"""The Open Inference Protocol (KServe v2) request header and parameters (pydantic v2).

Validated strictly, as the JSON API's schemas are: no coercion, no unknown
fields, no NaN or infinity in parameters. Tensor `data` is taken as JSON gives
it (nested or flat lists); `handlers.wire.v2_read` turns it into an array of the
declared datatype and checks it. Each operation's request parameters reuse the
JSON API's field definitions (`handlers.wire.json_schemas`), so limits and defaults have
one source.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from handlers.wire.json_schemas import _STRICT, EncodeRequest, SampleRequest, ScoreRequest

MAX_RANK = 8  # no tensor of ours has more than 4 dimensions; this bounds the header's work
MAX_TENSORS = 16  # inputs or outputs named in one request (ours take at most 3)


class InputParameters(BaseModel):
    model_config = _STRICT
    binary_data_size: int | None = Field(
        default=None, ge=0, description="bytes of this input in the binary part"
    )


class InputTensor(BaseModel):
    model_config = _STRICT
    name: str
    shape: list[int] = Field(max_length=MAX_RANK)
    datatype: str
    parameters: InputParameters | None = None
    data: list[Any] | None = Field(default=None, description="row-major, nested or flat")


class OutputParameters(BaseModel):
    model_config = _STRICT
    binary_data: bool | None = Field(default=None, description="return this output binary")


class RequestedOutput(BaseModel):
    model_config = _STRICT
    name: str
    parameters: OutputParameters | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
    id: str | None = None
    # values: bool, number or string (checked by handlers.wire.v2_read, naming the parameter)
    parameters: dict[str, Any] = Field(default_factory=dict, max_length=32)
    inputs: list[InputTensor] = Field(default_factory=list, max_length=MAX_TENSORS)
    outputs: list[RequestedOutput] | None = Field(default=None, max_length=MAX_TENSORS)


# ---- each operation's request parameters ------------------------------------
ImageDatatype = Literal["UINT8", "FP32"]


class EncodeParameters(BaseModel):
    model_config = _STRICT
    sample: bool = EncodeRequest.model_fields["sample"]
    seed: int | None = EncodeRequest.model_fields["seed"]


class DecodeParameters(BaseModel):
    model_config = _STRICT
    image_datatype: ImageDatatype = Field(
        default="UINT8", description="UINT8: round(clip(x, 0, 1) * 255); FP32: x in [0, 1]"
    )


class SampleParameters(DecodeParameters):
    n: int = SampleRequest.model_fields["n"]
    seed: int | None = SampleRequest.model_fields["seed"]
    temperature: float = SampleRequest.model_fields["temperature"]


class ScoreParameters(BaseModel):
    model_config = _STRICT
    fpr: float = ScoreRequest.model_fields["fpr"]
    error_map: bool = ScoreRequest.model_fields["error_map"]
    mode: Literal["full", "latent"] = ScoreRequest.model_fields["mode"]


PARAMETERS = {
    "encode": EncodeParameters,
    "decode": DecodeParameters,
    "sample": SampleParameters,
    "score": ScoreParameters,
}

"""Per-worker tuning read from the archive's model-config.yaml `handler:` section.

`serving/archive.py` writes these defaults into every archive (one source of
truth: this dataclass); an operator may edit them per model. Unknown keys or
wrong types fail the worker at load time with a clear message rather than being
ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# the model formats a worker can load (handlers/model.py): TorchScript, the
# contract every export carries, or AOTInductor packages (`.pt2`, CPU only)
MODEL_FORMATS = ("torchscript", "aoti")


@dataclass(frozen=True)
class HandlerOptions:
    chunk_size: int = 256  # max items per model call (requests are flattened, then chunked)
    cpu_threads: int = 1  # torch intra-op threads per worker (workers * threads <= cores)
    half: bool = False  # float16 weights and inputs, CUDA only (ignored on CPU)
    pin_memory: bool = False  # pinned host buffers for async copies, CUDA only
    keep_freed_memory: bool = True  # glibc keeps freed heap (handlers.device.keep_freed_memory)
    model_format: str = "torchscript"  # which export the archive carries: MODEL_FORMATS

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            want = {"int": int, "bool": bool, "str": str}[f.type]
            if type(value) is not want:
                raise ValueError(f"handler option {f.name} must be {want.__name__}, got {value!r}")
        if self.chunk_size < 1:
            raise ValueError(f"handler option chunk_size must be >= 1, got {self.chunk_size}")
        if self.cpu_threads < 1:
            raise ValueError(f"handler option cpu_threads must be >= 1, got {self.cpu_threads}")
        if self.model_format not in MODEL_FORMATS:
            raise ValueError(
                f"handler option model_format must be one of {MODEL_FORMATS}, "
                f"got {self.model_format!r}"
            )

    @classmethod
    def from_config(cls, model_yaml_config: dict | None) -> HandlerOptions:
        section = (model_yaml_config or {}).get("handler") or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"unknown handler options {unknown}; known: {sorted(known)}")
        return cls(**section)

    def to_dict(self) -> dict:
        return asdict(self)

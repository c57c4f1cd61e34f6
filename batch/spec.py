"""What a batch job is (`JobSpec`), checked before Ray starts.

A bad option, an unknown model, an operation the model cannot serve or an
unreadable input raise `JobError` with a message that says what to change;
the CLI prints it and exits 2 (1 is a job that started and failed).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from handlers.limits import LIMITS
from handlers.manifest import ModelInfo, model_files

OPERATIONS = ("encode", "score", "decode", "sample")
# output-shaping options: a rerun with other values is another job (spec.identity)
SHAPING = (
    "mode",
    "fpr",
    "format",
    "n",
    "seed",
    "temperature",
    "limit",
    "block_items",
    "batch_size",
)


class JobError(ValueError):
    """The job cannot start: the message says why and what to change."""


class JobFailed(RuntimeError):
    """The job started and could not finish: the message says why; a rerun resumes."""


@dataclass
class JobSpec:
    operation: str
    model: str
    model_dir: str  # on the driver
    output: str
    input: str | None = None  # encode, score, decode
    # operation options (the HTTP API's names and defaults)
    mode: str = "full"  # score
    fpr: float = 0.01  # score
    format: str = "png"  # decode, sample: png | array
    n: int = 0  # sample
    seed: int = 0  # sample
    temperature: float = 1.0  # sample
    images: str | None = None  # decode, sample: also write PNG files here
    # the job
    address: str | None = None  # None: a local Ray for the job (or RAY_ADDRESS)
    actors: tuple[int, int] = (0, 0)  # (min, max); 0: one per CPU of the cluster
    batch_size: int = 256  # items per model call
    block_items: int = 4096  # items per block: the unit of output and of resume
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    limit: int | None = None
    max_errors: int | None = None  # stop once more items than this failed
    quiet: bool = False
    ship: bool = False  # send the model and the code through the runtime environment
    stall_timeout: float = 30.0  # a node lost and no block for this long: fail
    overwrite: bool = False
    worker_model_dir: str = ""  # where actors load the model (set by the driver)
    model_sha256: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> JobSpec:
        d = dict(d)
        d["actors"] = tuple(d["actors"])
        return cls(**d)

    def options(self) -> dict:
        """The options this operation reads, for the manifest."""
        names = {
            "encode": (),
            "score": ("mode", "fpr"),
            "decode": ("format",),
            "sample": ("n", "seed", "temperature", "format"),
        }[self.operation]
        common = ("batch_size", "block_items", "limit", "cpus_per_actor", "gpus_per_actor")
        return {k: getattr(self, k) for k in (*names, *common, "max_errors")}

    def identity(self) -> dict:
        """What makes two runs the same job (resume) or different ones (refused)."""
        shaping = {k: v for k, v in self.options().items() if k in SHAPING}
        return {
            "operation": self.operation,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "input": self.input,
            "options": shaping,
        }


def image_shapes(info: ModelInfo) -> tuple[tuple[int, ...], ...]:
    """The shapes of one array image the model reads, as a v2 `image` tensor's item:
    H x W (or 1 x H x W) for one channel, H x W x C for colour."""
    c, h, w = info.image_shape
    return ((h, w), (1, h, w)) if c == 1 else ((h, w, c),)


def check(spec: JobSpec) -> ModelInfo:
    """Every check that needs no Ray; fills `model_sha256`."""
    if spec.operation not in OPERATIONS:
        raise JobError(f"unknown operation {spec.operation!r}; one of {', '.join(OPERATIONS)}")
    model_dir = Path(spec.model_dir)
    if not (model_dir / "manifest.json").is_file():
        raise JobError(
            f"unknown model {spec.model!r}: no manifest.json in {model_dir} "
            "(give --model-dir, or export the model there: make models / make register)"
        )
    try:
        info = ModelInfo.from_dir(model_dir)
    except (ValueError, KeyError) as err:
        raise JobError(f"model {spec.model!r}: unreadable manifest ({err})") from None
    for f in model_files(spec.operation):
        if not (model_dir / f).is_file():
            raise JobError(f"model {spec.model!r}: {f} missing from {model_dir}")
        spec.model_sha256[f] = hashlib.sha256((model_dir / f).read_bytes()).hexdigest()
    _check_options(spec, info)
    return info


def _check_options(spec: JobSpec, info: ModelInfo) -> None:
    limits = LIMITS.for_image(info.image_shape)
    if spec.operation != "sample" and not spec.input:
        raise JobError(f"{spec.operation} needs --input")
    if spec.operation == "sample":
        if spec.n < 1:
            raise JobError("sample needs --n >= 1")
        if info.prior_mean is None:
            raise JobError(f"{spec.model} is an AE without a sampling prior: it cannot sample")
        if not 0 <= spec.temperature <= limits.max_temperature:
            raise JobError(f"--temperature must be in [0, {limits.max_temperature}]")
        if not 0 <= spec.seed <= limits.max_seed:
            raise JobError(f"--seed must be in [0, {limits.max_seed}]")
    if spec.operation == "score":
        if "calibration" not in info.manifest:
            raise JobError(f"{spec.model} has no score calibration: it cannot score")
        if spec.mode not in ("full", "latent"):
            raise JobError("--mode must be full or latent")
        if not limits.min_fpr <= spec.fpr <= limits.max_fpr:
            raise JobError(f"--fpr must be in [{limits.min_fpr}, {limits.max_fpr}]")
    if spec.format not in ("png", "array"):
        raise JobError("--format must be png or array")
    lo, hi = spec.actors
    if lo < 0 or hi < lo or (hi == 0 and lo != 0):
        raise JobError("--actors must be N or MIN,MAX with 1 <= MIN <= MAX")
    for name in ("batch_size", "block_items"):
        if getattr(spec, name) < 1:
            raise JobError(f"--{name.replace('_', '-')} must be >= 1")
    if spec.cpus_per_actor <= 0 or spec.gpus_per_actor < 0:
        raise JobError("--cpus-per-actor must be > 0 and --gpus-per-actor >= 0")
    if spec.limit is not None and spec.limit < 1:
        raise JobError("--limit must be >= 1")
    if spec.max_errors is not None and spec.max_errors < 0:
        raise JobError("--max-errors must be >= 0")
    if spec.operation == "sample":
        # blocks hold whole sample requests of the service's size (batch.worker)
        per = limits.max_n
        spec.block_items = max(per, spec.block_items // per * per)

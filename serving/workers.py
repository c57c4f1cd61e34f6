"""TorchServe's per-model settings: `WorkerConfig` and the model-config.yaml it renders.

Workers, torch threads and dynamic batching per operation, and the model format
per model, the one source of truth for those defaults. `serving/archive.py`
packs `config_text` into every archive; the benchmark, the tests and
`serving/server.py` build archives with other settings by passing their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import yaml

from handlers.options import HandlerOptions


@dataclass(frozen=True)
class WorkerConfig:
    """TorchServe's per-model settings (model-config.yaml), defaults for every archive.

    Chosen with `make bench` on 2 cores (docs/performance.md tells the measurements):
    - batchSize 8: with 2 workers and 16 clients sending 64 images each, a
      batch of 16 went whole to one worker while the other idled (13,100
      against 23,100 items/s); 8 is also where single images stop gaining;
    - maxBatchDelay 1 ms: the wait a lone request pays, and a worker that takes
      a request waits that long for more, so at a few bulk clients one worker
      took every request while the other idled. `make bench --targets-only`,
      5 ms against 1 ms, one run each on an idle machine: a lone single-image
      encode p50 9.9 -> 4.3 ms (the no-op's 7.4 -> 2.2 ms), a lone decode
      8.5 -> 4.2 ms; binary 64-image encode at 4 clients 5,888 -> 9,434 items/s
      and at 8 clients 6,554 -> 10,739 (0.47 -> 0.85 of the in-process
      ceiling); but single images at 32 clients 1,956 -> 1,573 req/s (batches
      still fill to 8; TorchServe's frontend spends more CPU per request
      polling) and batching on vs off 3.20x -> 3.37x. 20 ms had given a lone
      request p50 21.6 ms. 1 ms is the floor: TorchServe 0.12 reads 0 in
      model-config.yaml as unset and waits its default 100 ms (ModelManager:
      `marMaxBatchDelay > 0 ? marMaxBatchDelay : DEFAULT_MAX_BATCH_DELAY`); with 0
      a lone request's p50 read 105 ms.
      The loads most clients make (one caller, a few bulk callers) gain most;
    - 2 encode workers: a worker is one Python process with one torch thread,
      so one worker can use only one core; encode (images in, the costliest
      input decoding) gets two, decode, sample and score one each, so that the
      16 archives of `make serve` start 20 workers (every worker costs about
      200 MiB and 1.5 s of cold start on 2 cores);
    - decode and sample: 1 worker with 2 torch threads. Their work is the model
      (transposed convolutions, 1.6x the encoder's time), which torch spreads
      over threads, while their input is cheap. Sweep on an idle 2-core machine,
      binary v2, fashion-vae, two alternating runs per setting
      (decode/sample workers x threads; items/s, p50):

      | decode, sample        | 1 x 1       | 1 x 2       | 2 x 1       |
      | --------------------- | ----------- | ----------- | ----------- |
      | decode 64, 8 clients  | 3,418-3,763 | 5,133-5,517 | 6,477-6,694 |
      | decode 64, lone p50   | 21-22 ms    | 15.5-17 ms  | 22-23 ms    |
      | decode 1, 32 clients  | 833-866     | 893-957     | 1,378-1,525 |
      | sample 64, 8 clients  | 4,019-4,173 | 5,734-5,773 | 6,285-7,014 |

      Two workers gain most under load but cost 8 more processes for the four
      shipped models (1.6 GiB, about 12 s of cold start); 2 threads gain most
      of it for free and make a lone bulk request faster. Raise
      `decode_workers` (or `PUT /models/<name>-decode?min_worker=2` on the
      management API) for a deployment serving mostly decode traffic.
    """

    batch_size: int = 8  # requests per dynamic batch (each may carry many items)
    max_batch_delay_ms: int = 1  # how long the frontend waits to fill a batch
    encode_workers: int = 2
    decode_workers: int = 1
    sample_workers: int = 1
    score_workers: int = 1
    # torch intra-op threads per worker (the archive's handler option cpu_threads)
    encode_threads: int = 1
    decode_threads: int = 2
    sample_threads: int = 2
    score_threads: int = 1
    response_timeout_s: int = 60
    # model name -> handler option model_format (handlers.options.MODEL_FORMATS);
    # a model not named here is served as TorchScript
    formats: dict[str, str] = field(default_factory=dict)

    def workers(self, operation: str) -> int:
        return getattr(self, f"{operation}_workers")

    def threads(self, operation: str) -> int:
        return getattr(self, f"{operation}_threads")

    def with_workers(self, n: int) -> WorkerConfig:
        """The same settings with n workers for every operation."""
        return replace(self, encode_workers=n, decode_workers=n, sample_workers=n, score_workers=n)

    def model_format(self, model: str) -> str:
        return self.formats.get(model, "torchscript")

    def model_config(self, operation: str, model_format: str = "torchscript") -> dict:
        n = self.workers(operation)
        return {
            "minWorkers": n,
            "maxWorkers": n,
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay_ms,
            "responseTimeout": self.response_timeout_s,
            "handler": HandlerOptions(
                cpu_threads=self.threads(operation), model_format=model_format
            ).to_dict(),
        }

    def config_text(self, operation: str, model_format: str = "torchscript") -> str:
        """The archive's model-config.yaml, as the archiver packs it (keys in this order)."""
        return yaml.safe_dump(self.model_config(operation, model_format), sort_keys=False)

"""`make bench`: how fast is latentserve on this machine, as ratios measured in one run.

    python -m loadtests.bench [--quick] [--model fashion-vae] [--out loadtests/results]

One run measures, in this order, with nothing else of ours running:

1. compute ceiling: in-process TorchScript items/s and the median time of one call
   (the model's own time) of the encoder, the decoder and the score operation's
   model work (both, the statistics and the PNG length) at batch 1, 8 (a dynamic
   batch of single images) and 64, with 1 torch thread (what one worker gets:
   `cpu_threads` 1), with each operation's workers x threads, and every core;
   and the two model formats, TorchScript against the AOTInductor package
   (`compute.formats`: encoder, decoder, 1 thread, batch 1/8/64; the package is
   compiled on first use and cached, `serving/packages.py`);
2. cold start: seconds from starting TorchServe with what `make serve` loads
   (every shipped model, four archives each) until every worker is READY;
3. then one bench TorchServe on free loopback ports with the model's four
   archives (the shipped model-config), a batching-off copy of its encode
   archive (batchSize 1) and two no-op archives (`noop_handler.py`, the encode
   archive's worker settings) that answer the exact bytes the real encode
   returns for 1 and 64 images;
   on it, closed-loop load (`loadtests/bench/httpgen.py`) at several concurrencies:
   encode of 1 and of 64 images (service and no-op framework ceiling), decode
   of 1 and 64 latents, sample of 1 and 64 images; the same three operations on
   the Open Inference Protocol with binary tensors (`/v2/models/<archive>/infer`);
   dynamic batching on versus off at concurrency 32; and a worker kill under load
   (recovery time, `loadtests/chaos.py`);
4. once that server has stopped, the plain-server peer (`peer_fastapi.py`:
   FastAPI + uvicorn, 2 workers, our engine without batching) at the rows of the
   peers' table, JSON and binary v2, so that the peer ratio compares two servers
   measured on the same machine in the same run.

It writes `<out>/bench-<timestamp>.json`, `.md` and `.png` and copies them to
`<out>/latest.{json,md}` and `docs/figures/bench.png` (what docs/performance.md
shows). Payloads are Fashion-MNIST test images (and their codes) as base64 PNG in
JSON and as binary v2 tensors, as clients send them (`loadtests/payloads.py`);
every answer is checked (status and item count; for v2 the declared outputs,
shapes and binary sizes), so errors are counted.

The modules, in the order a run uses them (this file imports none of them, so
that `python -m loadtests.bench.<module>` and the peer's workers load only theirs):

- `__main__`: the run (`python -m loadtests.bench`), its command line, writing the results;
- `compute`: the compute ceiling and the model formats, in-process
  (`python -m loadtests.bench.compute`: `make bench-score`, `make bench-formats`);
- `server`: the bench server's extra archives (`noop_handler.py`, the framework
  ceiling; batchSize 1), per-point timings from its metrics, the machine;
- `points`: the plan (`Plan`) and running its load points;
- `checks`: the cheap answer checks the points and the peer share;
- `peers`: the peers' figures quoted in issue 11, the comparison with them, and
  running the plain-server peer (`peer_fastapi.py`);
- `targets`: the goals and the ratios, from the result dict alone;
- `report` and `plot`: the markdown and the figure, from the result dict alone
  (so a saved JSON can be recomputed and redrawn);
- `gateway`: apart from the run, the latency the authenticating gateway adds
  (`python -m loadtests.bench.gateway`, `make bench-gateway`);
- `shapes`: apart from the run, encode and decode of a larger colour model beside the
  shipped 1x28x28 one, in-process (`python -m loadtests.bench.shapes`, `make bench-shapes`).
"""

"""`make bench-batch`: batch jobs (`python -m batch`) against their ceilings, one run.

    python -m loadtests.bench.batch [--quick] [--model fashion-vae] [--images 60000]
        [--repeat 5] [--out loadtests/results]

On the Fashion-MNIST training set (`--images` of it, `--repeat` times over),
every job a subprocess run as a user runs it (`batch_cluster.run_job`):

1. the in-process ceiling: `Engine.from_dir(<model>, 'encode')`, 2 torch threads,
   chunks of 256, `run_chunks` over the job's uint8 data block by block, each
   block converted by `batch.convert.array_images_fast`, no Ray; and, to tell
   where a job's time goes, one `BlockWorker` in-process (1 thread) timing the
   stages of a few blocks (read, convert, model, Arrow columns, Parquet);
2. encode of the repeated set as one .npy, local Ray, one actor per CPU: its
   steady-state items/s (the manifest's `items_per_second`) against the ceiling,
   and its start-up apart (and, to compare, one actor of 2 CPUs, the ceiling's
   threads); the same job on one copy (`--images`): the driver's peak
   RSS (VmHWM at exit) should not grow with the items;
3. the set as a folder of PNG files: the batch job's wall time (start-up
   included) against the client's bulk embed of the folder (`python -m client
   embed`, binary v2, its default batch size and concurrency) on a TorchServe with
   only the model's archives, started as `make bench` starts its server; the job
   once starting its own local Ray, once on a local Ray already running (as the
   client's server is: `ray start` beforehand, 2 CPUs);
4. scaling on a local cluster (`batch_cluster.scaling`): 2 nodes x 1 CPU with
   `--actors 2` against 1 node x 1 CPU with `--actors 1`, steady items/s.

Writes `<out>/batch-<date>.json` and `.md` (and, unless --quick, `batch-latest.*`,
which are committed: docs/batch.md quotes them), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from loadtests.bench.batch_cluster import (
    breakdown,
    npy_input,
    png_folder,
    run_job,
    running_cluster,
    scaling,
    train_images,
)
from paths import LOADTEST_RESULTS, ROOT, STORE

# target name -> (comparison, bound): figure / peer's figure
TARGETS = {
    "encode_vs_ceiling": (">=", 0.85),
    "png_folder_vs_client": ("<=", 1.0),
    "png_folder_running_ray_vs_client": ("<=", 1.0),
    "scaling_2_vs_1": (">=", 1.7),
    "driver_memory_growth": ("<=", 1.10),
}


def ceiling(model_dir: Path, data: np.ndarray, threads: int, block: int, batch: int) -> float:
    """Items/s of the engine alone over `data`, converted block by block as the job does."""
    from batch.convert import array_images_fast
    from batch.reading import Items
    from handlers.engine import Engine
    from handlers.metrics import Recorder
    from handlers.options import HandlerOptions

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        options = HandlerOptions(chunk_size=batch, cpu_threads=threads)
        engine = Engine.from_dir(model_dir, "encode", options)
        engine.warmup()
        info = engine.op.info

        def one(a: np.ndarray) -> None:
            inputs = array_images_fast(info, Items(list(range(len(a))), array=a))
            engine.run_chunks(inputs.x, Recorder())

        one(np.ascontiguousarray(data[:block]))
        t0 = time.perf_counter()
        for s in range(0, len(data), block):
            one(np.ascontiguousarray(data[s : s + block]))
        return len(data) / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)


def client_embed(model: str, folder: Path, tmp: Path, log=print) -> dict:
    """`python -m client embed <folder>` (binary v2) against a TorchServe with the
    model's archives only: the outside wall time and the client's own line."""
    from serving.server import start_server

    with start_server(tmp / "serve", [STORE / model]) as server:
        log(f"  TorchServe READY in {server.ready_seconds:.1f} s at {server.url}")
        cmd = [sys.executable, "-m", "client", "embed", str(folder), "--url", server.url,
               "--model", model, "--protocol", "v2", "--out", str(tmp / "embed.npy"),
               "--quiet"]  # fmt: skip
        log(f"  $ python -m client embed {folder} --url {server.url} --model {model} "
            "--protocol v2 --out ... --quiet")  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"client embed failed: {proc.stderr[-3000:]}")
    rows = np.load(tmp / "embed.npy", mmap_mode="r").shape[0]
    log(f"  {rows} rows in {wall:.1f} s: {proc.stdout.strip().splitlines()[0]}")
    return {"wall_s": wall, "rows": rows, "server_ready_s": server.ready_seconds,
            "said": proc.stdout.strip()}  # fmt: skip


def passed(name: str, value: float) -> bool | None:
    how, bound = TARGETS[name]
    return None if how == "report" else value >= bound if how == ">=" else value <= bound


def targets(r: dict) -> list[dict]:
    big, small, png, sc = r["encode_big"], r["encode_small"], r["png"], r["scaling"]
    rows = [
        ("encode_vs_ceiling", f"encode {big['rows']:,} (.npy), steady items/s",
         big["items_per_second"], "in-process ceiling, 2 threads", r["ceiling_items_per_s"]),
        ("png_folder_vs_client",
         f"{png['batch']['rows']:,} PNG files, batch job wall s (starting its own Ray)",
         png["batch"]["wall_s"], "client bulk embed (v2) wall s", png["client"]["wall_s"]),
        ("png_folder_running_ray_vs_client",
         f"{png['batch']['rows']:,} PNG files, batch job wall s (a running Ray, 2 CPUs)",
         png["running_ray"]["wall_s"], "client bulk embed (v2) wall s", png["client"]["wall_s"]),
        ("scaling_2_vs_1", "2 nodes x 1 CPU, --actors 2, items/s",
         sc["two_nodes"]["items_per_second"], "1 node x 1 CPU, --actors 1",
         sc["one_node"]["items_per_second"]),
        ("driver_memory_growth", f"driver peak RSS MiB, {big['rows']:,} items",
         big["driver_peak_mib"], f"{small['rows']:,} items", small["driver_peak_mib"]),
    ]  # fmt: skip
    out = []
    for name, what, value, peer_what, peer in rows:
        ratio = value / peer
        how, bound = TARGETS[name]
        goal = "report" if how == "report" else f"{how} {bound}"
        out.append({"target": name, "what": what, "figure": value, "peer": peer_what,
                    "peer_figure": peer, "ratio": ratio, "goal": goal,
                    "passed": passed(name, ratio)})  # fmt: skip
    return out


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"# Batch jobs: `python -m batch` against its ceilings ({r['started']})",
        "",
        f"`{r['command']}` on {m['cores']} cores ({m['cpu']}, {m['memory_mib']:,} MiB), "
        f"Python {m['python']}, torch {m['torch']}, ray {r['ray']}; model {r['model']}, "
        f"batch size {r['batch_size']}, {r['block_items']} items per block; {r['seconds']:.0f} s.",
        "",
        "| target | figure | peer | peer's figure | ratio | goal | result |",
        "| --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for t in r["targets"]:
        res = {True: "pass", False: "FAIL", None: "reported"}[t["passed"]]
        lines.append(
            f"| {t['what']} | {t['figure']:,.1f} | {t['peer']} | {t['peer_figure']:,.1f} | "
            f"{t['ratio']:.3f} | {t['goal']} | {res} |"
        )
    big, bd = r["encode_big"], r["breakdown"]
    lines += [
        "",
        f"Start-up (apart): {big['startup_seconds']:.1f} s of the {big['wall_seconds']:.1f} s "
        f"job (manifest); {big['actors'][1]} actors of 1 CPU. Driver CPU: "
        f"{big['driver_cpu_s']:.1f} s. 1-thread ceiling {r['ceiling_1t_items_per_s']:,.0f} "
        "items/s.",
        "",
        f"Where a block's time goes (one BlockWorker in-process, 1 thread, {bd['items']} items,"
        f" seconds): "
        + ", ".join(f"{k} {v:.4f}" for k, v in bd["s_per_block"].items())
        + f"; the model is {bd['model_share']:.0%} of it, "
        f"{bd['items_per_s_one_actor']:,.0f} items/s.",
        "",
        "| run | rows | wall s | start-up s | items/s | driver peak MiB | driver CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    runs = {"encode .npy": big, "encode .npy, 1 actor x 2 CPUs": r["encode_big_2t"],
            "encode .npy (memory peer)": r["encode_small"],
            "encode PNG folder": r["png"]["batch"],
            "encode PNG folder, a running Ray": r["png"]["running_ray"],
            "cluster 1 node, 1 actor": r["scaling"]["one_node"],
            "cluster 2 nodes, 2 actors": r["scaling"]["two_nodes"]}  # fmt: skip
    for name, j in runs.items():
        lines.append(
            f"| {name} | {j['rows']:,} | {j['wall_s']:.1f} | {j['startup_seconds']:.1f} | "
            f"{j['items_per_second']:,.0f} | {j['driver_peak_mib']:.0f} | {j['driver_cpu_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def run(a: argparse.Namespace, log=print) -> dict:
    import ray

    from loadtests.bench.server import machine

    t0 = time.monotonic()
    r = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "command": " ".join(["python -m loadtests.bench.batch", *sys.argv[1:]]),
         "machine": machine(), "ray": ray.__version__, "model": a.model,
         "batch_size": 256, "block_items": 4096}  # fmt: skip
    images = train_images()[: a.images]
    with tempfile.TemporaryDirectory(prefix="latentserve-bench-batch-") as tmpdir:
        tmp = Path(tmpdir)
        small, big = npy_input(tmp, images, 1), npy_input(tmp, images, a.repeat)
        data = np.load(big, mmap_mode="r")
        log(f"ceiling: in-process encode of {len(data):,} items, 2 threads, batch 256")
        r["ceiling_items_per_s"] = ceiling(STORE / a.model, data, 2, 4096, 256)
        r["ceiling_1t_items_per_s"] = ceiling(STORE / a.model, data[: len(images)], 1, 4096, 256)
        log(f"  {r['ceiling_items_per_s']:,.0f} items/s (1 thread: "
            f"{r['ceiling_1t_items_per_s']:,.0f})")  # fmt: skip
        r["breakdown"] = breakdown(a.model, big, tmp, 8)
        log(f"  one BlockWorker: {json.dumps(r['breakdown'])}")
        job = ["encode", "--model", a.model]
        log(f"encode {len(data):,} items (.npy), local Ray")
        r["encode_big"] = run_job([*job, "--input", str(big)], tmp / "out-big", log)
        log("the same, 1 actor of 2 CPUs (2 torch threads: the ceiling's setting)")
        args = [*job, "--input", str(big), "--actors", "1", "--cpus-per-actor", "2"]
        r["encode_big_2t"] = run_job(args, tmp / "out-big-2t", log)
        log(f"encode {len(images):,} items (.npy), local Ray: the driver's memory")
        r["encode_small"] = run_job([*job, "--input", str(small)], tmp / "out-small", log)
        log(f"{len(images):,} PNG files")
        folder = png_folder(tmp, images)
        r["png"] = {"batch": run_job([*job, "--input", str(folder)], tmp / "out-png", log)}
        log("client bulk embed of the folder")
        r["png"]["client"] = client_embed(a.model, folder, tmp, log)
        log("the batch job on a Ray already running (as the client's TorchServe was)")
        with running_cluster(num_cpus=2) as address:
            args = [*job, "--input", str(folder), "--address", address]
            r["png"]["running_ray"] = run_job(args, tmp / "out-png-running", log)
        log("scaling: local cluster")
        r["scaling"] = scaling(tmp, [*job, "--input", str(big)], log)
    r["seconds"] = time.monotonic() - t0
    r["targets"] = targets(r)
    return r


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench.batch", description=__doc__)
    p.add_argument("--model", default="fashion-vae")
    p.add_argument("--images", type=int, default=60000, help="of the training set (<= 60000)")
    p.add_argument("--repeat", type=int, default=5, help="copies in the large .npy")
    p.add_argument("--quick", action="store_true", help="--images 6000 (a smoke run, minutes)")
    p.add_argument("--out", type=Path, default=LOADTEST_RESULTS)
    a = p.parse_args(argv)
    if a.quick:
        a.images = min(a.images, 6000)
    r = run(a, log=lambda m: print(m, flush=True))
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"batch-{time.strftime('%Y-%m-%d')}{'-quick' * a.quick}"
    written = [stem] + ([] if a.quick else [a.out / "batch-latest"])  # latest: committed
    for path in written:
        path.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n")
        path.with_suffix(".md").write_text(markdown(r))
    print(markdown(r), end="")
    print("wrote " + ", ".join(f"{p}.json, {p}.md" for p in written))


if __name__ == "__main__":
    main()

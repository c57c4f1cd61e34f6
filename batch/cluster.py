"""A job's blocks on Ray Data: start or join Ray, run the actor pool, watch it.

The job's Ray dataset is its unfinished blocks' descriptors, one Ray block
each, so the streaming executor hands them to an actor pool (`batch.actor`:
each actor a `batch.worker.BlockWorker`) as actors free up; only small
summaries come back. Ray restarts a dead actor and retries its task (Ray Data
sets `max_restarts` / `max_task_retries` to -1 for actor pools:
`actor_pool_map_operator.py`), so a killed worker costs a retry, and a block
rewritten by a retry replaces itself. A lost node is different: if the
cluster has no resources left for the pool, Ray waits for them forever, so the
driver watches the nodes and fails once a node is gone and no block has
finished for `stall_timeout` seconds; a rerun resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from batch.spec import JobError, JobFailed, JobSpec

DONE = object()
PROGRESS_EVERY = 30.0  # seconds between progress lines where no progress bar shows
CONNECT_TIMEOUT = 5.0  # seconds to reach a cluster's address before refusing the job


def _runtime_env(spec: JobSpec, staging: Path) -> dict:
    """--ship: the model and the code travel with the job (a cluster without the image)."""
    import handlers

    model = staging / "latentserve-model" / spec.model
    shutil.copytree(spec.model_dir, model)
    spec.worker_model_dir = f"latentserve-model/{spec.model}"
    pkgs = [str(Path(__file__).resolve().parent), str(Path(handlers.__file__).resolve().parent)]
    return {"working_dir": str(staging), "py_modules": pkgs}


def _init_ray(spec: JobSpec, staging: Path) -> None:
    import ray

    env = _runtime_env(spec, staging) if spec.ship else None
    level = logging.ERROR if spec.quiet else logging.WARNING
    kwargs = {"logging_level": level, "log_to_driver": not spec.quiet, "runtime_env": env}
    address = cluster_address(spec)
    if address:
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as err:  # "auto" with no cluster on this machine, ...
            raise JobError(f"Ray cluster {address}: {err}") from None
    else:
        # a Ray of our own: no usage report to Ray's servers (an offline cluster cannot
        # send it anyway; one more actor on its CPUs)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(address="local", include_dashboard=False, **kwargs)


def cluster_address(spec: JobSpec) -> str | None:
    """The cluster to join (--address, else RAY_ADDRESS), or None: a local Ray of the job's."""
    address = spec.address or os.environ.get("RAY_ADDRESS")
    return None if address in (None, "", "local") else address


def check_reachable(spec: JobSpec) -> None:
    """A HOST:PORT (or ray://HOST:PORT) nothing listens on: refused within seconds, before
    Ray is imported (Ray itself retries for minutes, saying only that it cannot connect)."""
    address = cluster_address(spec)
    if address is None:
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray parses itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as err:
        raise JobError(
            f"no Ray cluster answers at {address} ({err}): start one (ray start --head) or "
            "give its address (the head's GCS port, 6379, or ray://HEAD:10001)"
        ) from None


def pool_size(spec: JobSpec, resources: dict, blocks: int) -> tuple[int, int]:
    """The actor pool's (min, max): --actors, or as many actors as the cluster holds
    (CPUs, and GPUs for a GPU job); never more than the blocks to do. A minimum the
    cluster cannot hold would wait forever: refused."""
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    fit = int(cpus // spec.cpus_per_actor)
    what = f"{cpus:g} CPUs"
    if spec.gpus_per_actor > 0:
        fit = min(fit, int(gpus // spec.gpus_per_actor))
        what += f" and {gpus:g} GPUs"
    lo, hi = spec.actors
    if hi == 0:
        lo = hi = fit
    if lo > fit or fit < 1:
        need = f"--cpus-per-actor {spec.cpus_per_actor:g}" + (
            f" and --gpus-per-actor {spec.gpus_per_actor:g}" if spec.gpus_per_actor else ""
        )
        raise JobError(
            f"the Ray cluster has {what}: it holds {fit} actor(s) of {need}, and the job "
            f"needs at least {max(lo, 1)}; lower --actors or the resources per actor"
        )
    hi = min(hi, blocks)
    return min(lo, hi), hi


@contextlib.contextmanager
def _quiet_output(quiet: bool):
    """--quiet: what Ray prints in this process while the job runs (its C++ core on
    file descriptor 2, out of Python's reach; the raylets' messages it relays, on
    stdout) goes to a file, shown only if the job fails. Ray Data's actor pools log
    one benign error line per actor (constructor arguments in the object store:
    ray-project/ray#53727), and a retried task a few more."""
    if not quiet:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile() as captured:
        for fd in saved:
            os.dup2(captured.fileno(), fd)

        def restore() -> None:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)

        try:
            yield
        except BaseException:
            restore()
            captured.seek(0)
            tail = captured.read().decode(errors="replace").splitlines()[-40:]
            print("\n".join(["Ray's log (tail):", *tail]), file=sys.stderr)
            raise
        finally:
            restore()
            for copy in saved.values():
                os.close(copy)


def execute(
    spec: JobSpec, todo, t0: float, errors_before: int, log
) -> tuple[list[dict], float, dict]:
    import ray
    import ray.data

    from batch.actor import BlockActor

    with (
        tempfile.TemporaryDirectory(prefix="latentserve-batch-") as staging,
        _quiet_output(spec.quiet),
    ):
        spec.worker_model_dir = spec.worker_model_dir or str(Path(spec.model_dir).resolve())
        _init_ray(spec, Path(staging))
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = not spec.quiet and sys.stderr.isatty()
            ctx.verbose_progress = False
            if not ctx.enable_progress_bars:  # by choice: no warning that they are off
                logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
            if spec.quiet:
                logging.getLogger("ray.data").setLevel(logging.ERROR)
            lo, hi = pool_size(spec, ray.cluster_resources(), len(todo))
            ds = ray.data.from_items([b.to_row() for b in todo], override_num_blocks=len(todo))
            ds = ds.map_batches(
                BlockActor,
                fn_constructor_kwargs={"job": spec.to_dict()},
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi),
                num_cpus=spec.cpus_per_actor,
                num_gpus=spec.gpus_per_actor or None,
            )
            progress = None if spec.quiet or ctx.enable_progress_bars else log
            try:
                summaries = _watch(spec, ds, len(todo), errors_before, progress)
            except BaseException:
                _stop(ds)
                raise
            nodes = {s["node"] for s in summaries}
            info = {
                "address": spec.address or "local",
                "actors": [lo, hi],
                "nodes": len([n for n in ray.nodes() if n["Alive"]]),
                "worker_nodes": len(nodes),  # nodes whose actors wrote blocks this run
                "worker_hosts": sorted({s["host"] for s in summaries}),
                "shipped": spec.ship,
                "model_dirs": sorted({s["model"] for s in summaries}),  # where actors loaded it
            }
            startup = min(s["started"] for s in summaries) - t0 if summaries else 0.0
            return summaries, startup, info
        finally:
            ray.shutdown()


def _stop(ds) -> None:
    """Stop Ray Data's executor before Ray itself when the job fails: its threads would
    otherwise go on calling a Ray that is gone, and reconnect to the cluster. Ray
    Data's own path for it (`Dataset._synchronize_progress_bar`, `__del__`)."""
    executor = getattr(ds, "_current_executor", None)
    if executor is not None:
        executor.shutdown(force=True)


def _watch(spec: JobSpec, ds, blocks: int, errors: int, progress=None) -> list[dict]:
    """The summaries as blocks finish, failing on a lost node or too many errors;
    `progress` (where no progress bar shows: logs, kubectl logs) gets a line every
    PROGRESS_EVERY seconds."""
    import ray

    results: queue.Queue = queue.Queue()

    def consume() -> None:
        try:
            for row in ds.iter_rows():
                results.put(row)
            results.put(DONE)
        except BaseException as err:  # re-raised on the driver's thread
            results.put(err)

    threading.Thread(target=consume, daemon=True, name="batch-results").start()
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    summaries: list[dict] = []
    last, lost_at = time.time(), None
    said = started = time.time()
    while True:
        if progress is not None and time.time() - said >= PROGRESS_EVERY:
            said = time.time()
            rows = sum(x["rows"] for x in summaries)
            progress(
                f"{len(summaries)} of {blocks} blocks, {rows:,} rows ({errors:,} errors so far), "
                f"{rows / (said - started):,.0f} items/s, {said - started:.0f} s"
            )
        try:
            item = results.get(timeout=1.0)
        except queue.Empty:
            now_alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
            if alive - now_alive and lost_at is None:
                lost_at = time.time()
            if lost_at is not None and time.time() - max(last, lost_at) > spec.stall_timeout:
                raise JobFailed(
                    f"{len(alive - now_alive)} Ray node(s) lost and no block finished for "
                    f"{spec.stall_timeout:.0f} s since: the job's actors have nowhere to run. "
                    f"At least {len(summaries)} of the {blocks} blocks of this run are done and "
                    "saved; once the cluster has room, run the same command again to resume"
                ) from None
            continue
        if item is DONE:
            return summaries
        if isinstance(item, BaseException):
            raise JobFailed(f"the job failed: {item}") from item
        summary = {k: (v.item() if hasattr(v, "item") else v) for k, v in item.items()}
        summaries.append(summary)
        last, errors = time.time(), errors + summary["errors"]
        if spec.max_errors is not None and errors > spec.max_errors:
            raise JobFailed(
                f"{errors} items failed, more than --max-errors {spec.max_errors}; the "
                f"{len(summaries)} blocks written are kept"
            )

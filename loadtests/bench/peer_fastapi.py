"""The plain-server peer of `make bench`: FastAPI + uvicorn serving our encode engine.

    python -m loadtests.bench.peer_fastapi --model-dir model_store/fashion-vae --port 8090

What a team without a model server would write: one route, no dynamic batching
and so no batching wait, each request run alone as it arrives. It runs the same
`Engine` as the TorchServe workers (the same decoding, validation and answer
bytes), so the difference the benchmark measures is the serving path:
TorchServe's frontend, its socket to the worker and its batching, against
uvicorn's event loop. Like our workers, each uvicorn worker process gets one
torch thread and keeps freed memory.

Routes: `POST /predictions/encode` (the JSON API's body) and
`POST /v2/models/encode/infer` (the Open Inference Protocol, binary tensors too).
"""

import argparse
import os
import signal
import socket
from pathlib import Path

MODEL_ENV = "LATENTSERVE_PEER_MODEL_DIR"
READY_ENV = "LATENTSERVE_PEER_READY_DIR"  # each worker leaves a file there once it can answer


def create_app():
    """The ASGI app, one engine per process (uvicorn's factory mode calls this).

    (No `from __future__ import annotations` in this module: FastAPI reads the
    routes' annotations, and `Request` is imported here, not globally.)
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    from handlers.device import keep_freed_memory, set_cpu_threads
    from handlers.engine import Engine
    from handlers.wire.protocol import JSON, V2
    from handlers.wire.request import RawRequest, media_type

    set_cpu_threads(1)
    keep_freed_memory()
    engine = Engine.from_dir(Path(os.environ[MODEL_ENV]), "encode")
    engine.warmup()
    engine.model_name = "encode"
    app = FastAPI()

    async def answer(request: Request, protocol: str) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        raw = RawRequest(
            await request.body(), media_type(headers.get("content-type")), protocol, headers
        )
        # CPU-bound and short: run it on the event loop, as a plain server would
        reply = engine.handle([raw])[0][0]
        return Response(
            reply.body, reply.status, headers=reply.headers, media_type=reply.content_type
        )

    @app.post("/predictions/encode")
    async def encode_json(request: Request) -> Response:
        return await answer(request, JSON)

    @app.post("/v2/models/encode/infer")
    async def encode_v2(request: Request) -> Response:
        return await answer(request, V2)

    if os.environ.get(READY_ENV):
        (Path(os.environ[READY_ENV]) / f"worker-{os.getpid()}").touch()
    return app


def serve(sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        "loadtests.bench.peer_fastapi:create_app",
        factory=True,
        log_level="warning",
        access_log=False,
    )
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, required=True, help="an export (manifest.json)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    os.environ[MODEL_ENV] = str(a.model_dir.resolve())
    # One uvicorn process per worker, each on its own socket bound with SO_REUSEPORT,
    # so that the kernel spreads connections over the workers (on one shared socket
    # asyncio's accept loop let one process take every connection of a burst).
    children = []
    for _ in range(a.workers - 1):
        pid = os.fork()
        if pid == 0:
            serve(listen(a.port))
            os._exit(0)
        children.append(pid)
    try:
        serve(listen(a.port))
    finally:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        for pid in children:
            os.waitpid(pid, 0)


def listen(port: int) -> socket.socket:
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every answer (headers, then body: two writes) waited for the
    # client's delayed ACK, ~44 ms (as uvicorn's own --workers does here).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    return sock


if __name__ == "__main__":
    main()

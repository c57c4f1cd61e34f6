"""TorchServe's config.properties: reading it, its five listeners, free loopback ports.

`deploy/config.properties` (local) and `deploy/config.production.properties`
(containers) are Java properties files; `read_properties` reads them the way
TorchServe's launcher does. `Ports` are the listeners a config names, and
`Ports.free()` picks loopback ports of our own so that a test or benchmark
server never collides with `make serve` (8080-8082, 7070-7071) or another run.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from paths import DEPLOY

BASE_CONFIG = DEPLOY / "config.properties"
LOG_CONFIG = DEPLOY / "log4j2.xml"  # quiet on the hot path; see the file


def read_properties(path: Path) -> dict[str, str]:
    """key=value lines as TorchServe's model_server.py reads them (last one wins)."""
    props = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def free_ports(n: int, avoid: frozenset[int] = frozenset()) -> list[int]:
    """`n` distinct loopback ports the kernel reports free, none of them in `avoid`.

    All sockets stay bound until every port is chosen, so the `n` differ.
    """
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] in avoid:
                s.close()
            else:
                socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class Ports:
    """TorchServe's five listeners (it always starts its gRPC servers too)."""

    inference: int = 8080
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070
    grpc_management: int = 7071

    @classmethod
    def free(cls) -> Ports:
        """Free loopback ports chosen by the kernel, never the defaults of `make serve`."""
        return cls(*free_ports(5, avoid=frozenset(vars(cls()).values())))

    @classmethod
    def of(cls, props: dict[str, str]) -> Ports:
        """The ports a config names (its three HTTP addresses and two gRPC ports)."""
        http = ("inference", "management", "metrics")
        ports = {k: urlparse(props[f"{k}_address"]).port for k in http}
        for key in ("grpc_inference", "grpc_management"):  # TorchServe's defaults if unset
            ports[key] = int(props.get(f"{key}_port", getattr(cls(), key)))
        return cls(**ports)

    def properties(self, host: str = "127.0.0.1") -> dict[str, str]:
        """The config keys that put TorchServe's listeners on these ports of `host`."""
        return {
            "inference_address": f"http://{host}:{self.inference}",
            "management_address": f"http://{host}:{self.management}",
            "metrics_address": f"http://{host}:{self.metrics}",
            "grpc_inference_port": str(self.grpc_inference),
            "grpc_management_port": str(self.grpc_management),
        }

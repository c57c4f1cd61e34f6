"""`make bench` against the peers: the figures issue 11 quotes, next to ours from the run.

The issue measured plain FastAPI, Triton, LitServe and Ray Serve on this machine
with the same encoder and payloads; `make bench` cannot run them (they are not
dependencies of the project), so their figures are quoted here, once, with
their source, and the report puts ours next to them. The targets
(`benchtargets.py`): on the JSON payload, at least the best JSON peer at every
row; on binary tensors, at least Triton's binary figures.
"""

from __future__ import annotations

# Issue 11's table, measured on this 2-core machine side by side in one run: the same
# TorchScript encoder, the same JSON body of base64 PNGs (Triton: binary tensors), 2 workers
# with 1 torch thread each, 10 s per point. Images/s (= req/s for 1 image) as (low, high)
# of the quoted range; a single quoted figure is (x, x).
PEERS_SOURCE = (
    "issue 11 (plain FastAPI + uvicorn with 2 workers, Triton via pytriton 0.7 with binary "
    "tensors, LitServe 0.2.19, Ray Serve 2.60)"
)
TRITON = "Triton (binary)"
PEER_NAMES = ("FastAPI", TRITON, "LitServe", "Ray Serve")
_QUOTED = {  # (images per request, clients): one (low, high) per PEER_NAMES
    (1, 1): ((1002, 1064), (117, 117), (164, 168), (68, 68)),
    (1, 8): ((1952, 2091), (1613, 1637), (706, 844), (213, 213)),
    (1, 32): ((1120, 2003), (2257, 2306), (681, 1193), (252, 252)),
    (64, 1): ((9139, 9139), (5050, 5107), (3283, 4704), (2477, 2477)),
    (64, 4): ((18080, 18080), (10368, 10470), (6925, 7392), (5549, 5549)),
    (64, 16): ((12659, 17638), (21882, 25325), (8211, 11853), (6790, 6790)),
}
PEERS = {row: dict(zip(PEER_NAMES, figures, strict=True)) for row, figures in _QUOTED.items()}
# latentserve's own figures in the same table, before issue 11 (context, not a target)
BEFORE = {
    (1, 1): (115, 124), (1, 8): (2091, 2227), (1, 32): (3950, 4277),
    (64, 1): (4531, 4634), (64, 4): (7782, 7834), (64, 16): (17402, 18752),
}  # fmt: skip


def _one(rows: list[dict], label: str, c: int) -> dict | None:
    return next((r for r in rows if r["label"] == label and r["concurrency"] == c), None)


def against_peers(rows: list[dict]) -> tuple[dict, dict]:
    """Ours next to the best peer at each row of issue 11's table (JSON, then binary)."""
    table = []
    for (k, c), peers in PEERS.items():
        json_peers = {name: hi for name, (_, hi) in peers.items() if name != TRITON}
        best = max(json_peers, key=json_peers.get)
        ours = _one(rows, f"encode x{k}", c)
        ours_v2 = _one(rows, f"v2 encode x{k}", c)
        table.append(
            {
                "images": k,
                "clients": c,
                "json": ours["items_per_s"] if ours else None,
                "best_peer": best,
                "best_peer_figure": json_peers[best],
                "v2": ours_v2["items_per_s"] if ours_v2 else None,
                "triton": peers[TRITON][1],
                "before": BEFORE[(k, c)],
            }
        )

    def lowest(key: str, figure: str) -> float | None:  # None unless every row was measured
        if any(r[key] is None for r in table):
            return None
        return min(r[key] / r[figure] for r in table)

    return (
        {"value": lowest("json", "best_peer_figure"), "rows": table},
        {"value": lowest("v2", "triton"), "rows": table},
    )


def peers_markdown(table: list[dict]) -> list[str]:
    """The report's section: each row of issue 11's table with ours from this run."""
    lines = [
        "## Against the peers (issue 11's table)",
        "",
        f"Peers' figures as quoted by {PEERS_SOURCE}, the high end of each quoted range; "
        "ours from this run (encode of Fashion-MNIST test images: `JSON` the base64 PNG "
        "JSON API, `v2` binary UINT8 tensors). Images/s (= req/s for 1 image).",
        "",
        "| images x clients | ours JSON | best JSON peer | JSON ratio | ours v2 binary | "
        "Triton binary | v2 ratio | latentserve before |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table:
        ours, v2 = r["json"], r["v2"]
        lines.append(
            f"| {r['images']} x {r['clients']} | {_cell(ours)} | {r['best_peer_figure']:.0f} "
            f"({r['best_peer']}) | {_ratio(ours, r['best_peer_figure'])} | {_cell(v2)} | "
            f"{r['triton']:.0f} | {_ratio(v2, r['triton'])} | "
            f"{r['before'][0]:.0f}-{r['before'][1]:.0f} |"
        )
    return lines


def _cell(v: float | None) -> str:
    return "not measured" if v is None else f"{v:.0f}"


def _ratio(ours: float | None, theirs: float) -> str:
    return "-" if ours is None else f"{ours / theirs:.2f}"

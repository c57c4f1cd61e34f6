"""`make bench`'s figure: throughput and p99 latency against concurrency, per row kind.

A function of the result dict alone, as the report (`report.py`) is, so a saved run
can be redrawn: `plot(json.loads(path.read_text()), out)`.
"""

from __future__ import annotations

from pathlib import Path

from loadtests.bench.report import settings
from loadtests.bench.targets import compute_threads, pick


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, big = result["points"], result["plan"]["big"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    series = [
        ("encode x1", "C0", "-"),
        ("noop x1", "C0", ":"),
        (f"encode x{big}", "C1", "-"),
        (f"noop x{big}", "C1", ":"),
        ("decode x1", "C2", "-"),
        (f"decode x{big}", "C2", "--"),
        ("sample n=1", "C4", "-"),
        (f"sample n={big}", "C4", "--"),
        ("v2 encode x1", "C0", "-."),
        (f"v2 encode x{big}", "C1", "-."),
        ("v2 decode x1", "C2", "-."),
        (f"v2 decode x{big}", "C2", (0, (5, 1, 1, 1, 1, 1))),
        ("v2 sample n=1", "C4", "-."),
        (f"v2 sample n={big}", "C4", (0, (5, 1, 1, 1, 1, 1))),
    ]
    for label, color, style in series:
        pts = sorted(pick(rows, label), key=lambda r: r["concurrency"])
        if not pts:
            continue
        xs = [p["concurrency"] for p in pts]
        name = label.replace("noop", "no-op ceiling").replace("v2", "v2 binary")
        mark = "s" if label.startswith("v2") else "o"
        for ax, key in ((ax1, "items_per_s"), (ax2, "p99_ms")):
            ax.plot(xs, [p[key] for p in pts], ls=style, color=color, marker=mark, label=name)
    t = compute_threads(result)
    comp = result["compute"]["encoder"][str(t)]
    where = f"encoder in-process, {t} thread{'s' if t > 1 else ''}"
    ax1.axhline(comp[str(big)], color="C1", lw=0.8, ls="-.", label=f"{where}, batch {big}")
    ax1.axhline(comp["1"], color="C0", lw=0.8, ls="-.", label=f"{where}, batch 1")
    ticks = sorted({r["concurrency"] for r in rows})
    for ax, title, unit in ((ax1, "throughput", "items/s"), (ax2, "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=6, loc="upper left", ncol=2)
    m = result["machine"]
    fig.suptitle(
        f"latentserve {result['model']}: {m['cores']} cores ({m['cpu']}), {result['started']}; "
        f"{settings(result)}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

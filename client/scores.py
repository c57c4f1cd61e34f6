"""score's answer (`Scored`) and how each wire format asks for it and reads it back.

A `mode="full"` answer has the scores neg_elbo (AE: recon), complexity,
mahalanobis (primary) and latent, and the statistics behind them; a
`mode="latent"` answer (the encoder alone, about encode's cost) has the latent
score only, and kl_nats for a VAE. Columns follow `names`, as the server sends them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from client.errors import LatentServeError
from client.pixels import Shape, to_tensor
from client.protocols import Reply, Request, instances, json_body
from client.results import read_answer
from client.v2 import Expected, read_infer_response, write_infer_request

MODES = ("full", "latent")
STATISTICS = ("recon_nats", "kl_nats", "neg_elbo_nats", "bits_per_dim", "png_bits")


@dataclass(frozen=True)
class Scored:
    """score's answer, row i for input image i."""

    names: tuple[str, ...]  # the scores, in the columns' order
    primary: str  # the score behind `outlier`
    scores: np.ndarray  # (N, S) float; larger is more unusual
    p_values: np.ndarray  # (N, S): the share of held-out in-distribution images scoring higher
    is_outlier: np.ndarray  # (N, S) bool: p_value < fpr
    fpr: float
    statistics: dict[str, np.ndarray]  # those the answer has (see STATISTICS), (N,) each

    @property
    def outlier(self) -> np.ndarray:
        """(N,) bool: the primary score's is_outlier."""
        return self.is_outlier[:, self.names.index(self.primary)]

    def __len__(self) -> int:
        return len(self.scores)


def request(protocol: str, items: Sequence[Any], fpr: float, mode: str, shape: Shape) -> Request:
    """One score request of `items`, images of the model's `shape` (C, H, W)."""
    if protocol == "json":
        return json_body({"instances": instances(items, shape), "fpr": fpr, "mode": mode})
    params = {"fpr": fpr, "mode": mode}
    return write_infer_request({"image": to_tensor(items, shape)}, params)


def read(protocol: str, reply: Reply) -> Scored:
    return _read_json(reply) if protocol == "json" else _read_v2(reply)


def _read_json(reply: Reply) -> Scored:
    answer = read_answer(reply.body, reply.url, reply.items)
    preds = answer["predictions"]
    try:
        names = tuple(preds[0]["scores"])
        cols = {
            k: np.asarray([[p["scores"][s][k] for s in names] for p in preds])
            for k in ("score", "p_value", "is_outlier")
        }
        stats = {
            k: np.asarray([p[k] for p in preds], dtype=np.float64)
            for k in STATISTICS
            if all(p.get(k) is not None for p in preds)
        }
        return _checked(
            reply, names, answer["primary"], cols["score"].astype(np.float64),
            cols["p_value"].astype(np.float64), cols["is_outlier"].astype(bool),
            float(answer["fpr"]), stats,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as err:
        raise _bad(reply, f"a score answer lacks or mangles {err}") from None


def _read_v2(reply: Reply) -> Scored:
    n = reply.items
    expected = {
        "scores": Expected(("FP32",), (n, "S")),
        "p_values": Expected(("FP32",), (n, "S")),
        "is_outlier": Expected(("BOOL",), (n, "S")),
        **{k: Expected(("FP32",), (n,), required=False) for k in STATISTICS},
    }
    answer = read_infer_response(
        reply.body, reply.headers, expected, model_name=reply.model_name, url=reply.url
    )
    params, out = answer.parameters, answer.outputs
    try:
        names, primary, fpr = tuple(params["scores"].split(",")), params["primary"], params["fpr"]
    except (KeyError, AttributeError) as err:
        raise _bad(reply, f"the answer's parameters lack {err}") from None
    stats = {k: out[k].astype(np.float64) for k in STATISTICS if k in out}
    return _checked(
        reply, names, primary, out["scores"].astype(np.float64),
        out["p_values"].astype(np.float64), out["is_outlier"], float(fpr), stats,
    )  # fmt: skip


def _checked(reply: Reply, names, primary, scores, p, flags, fpr, stats) -> Scored:
    if primary not in names or scores.shape != (reply.items, len(names)):
        raise _bad(reply, f"scores {names} of shape {scores.shape}, primary {primary!r}")
    if not (np.all((p > 0) & (p <= 1)) and np.array_equal(flags, p < fpr)):
        raise _bad(reply, "p-values outside (0, 1] or flags that are not p < fpr")
    return Scored(names, primary, scores, p, flags, fpr, stats)


def _bad(reply: Reply, why: str) -> LatentServeError:
    return LatentServeError(f"not a valid score answer: {why}", status=200, url=reply.url)


def join(parts: list[Scored]) -> Scored:
    """The answers of a split request -> one, in order."""
    first = parts[0]
    kind = (first.names, first.primary, tuple(first.statistics))
    if any((p.names, p.primary, tuple(p.statistics)) != kind for p in parts):
        raise LatentServeError("the answers disagree on their scores or statistics")
    cat = np.concatenate
    return Scored(
        first.names, first.primary, cat([p.scores for p in parts]),
        cat([p.p_values for p in parts]), cat([p.is_outlier for p in parts]), first.fpr,
        {k: cat([p.statistics[k] for p in parts]) for k in first.statistics},
    )  # fmt: skip

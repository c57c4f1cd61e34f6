"""`python -m client score` without a server: its options, its files, its summary and
its errors, over both protocols, against a scripted score endpoint. The real server
runs it in test_client_live.py."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from client import LatentClient, RetryPolicy, cli
from tests.client.fake import first_pixel
from tests.client.v2server import metadata_doc, read_request, write_response

PROTOCOLS = pytest.mark.parametrize("protocol", ["v2", "json"])
FULL = ("neg_elbo", "complexity", "mahalanobis", "latent")


class ScoreServer(LatentClient):
    """A client whose transport answers `<model>-score` itself: image i (first pixel f)
    scores [f, 2f, ...] with p-value 1 / (1.5 + f) in every column, so order and flags
    are known; each request is kept in `sent` as (items, parameters)."""

    def __init__(self, script=(), **kwargs):
        super().__init__("http://127.0.0.1:9", sleep=lambda s: None, **kwargs)
        self.script = list(script)
        self.sent: list[tuple[int, dict]] = []

    def _get_once(self, url):
        assert url.endswith("/v2/models/fashion-vae-score"), url
        return 200, {}, json.dumps(metadata_doc("fashion-vae", "score")).encode()

    def _post_once(self, url, body, headers):
        assert url.endswith(("/fashion-vae-score/infer", "/fashion-vae-score")), url
        if self.protocol.name == "v2":
            doc, tensors = read_request(body, headers)
            params, first = doc.get("parameters", {}), tensors["image"][:, 0, 0]
        else:
            payload = json.loads(body)
            params = {k: v for k, v in payload.items() if k != "instances"}
            first = np.asarray([first_pixel(inst) for inst in payload["instances"]])
        self.sent.append((len(first), params))
        if self.script:
            return self.script.pop(0)
        fpr, mode = params["fpr"], params["mode"]
        names = FULL if mode == "full" else ("latent",)
        primary = "mahalanobis" if mode == "full" else "latent"
        scores = np.outer(first, np.arange(1, len(names) + 1)).astype(np.float32)
        p = np.repeat((1 / (1.5 + first.astype(np.float32)))[:, None], len(names), axis=1)
        kl = first.astype(np.float32) / 10
        if self.protocol.name == "v2":
            flags = p.astype(np.float64) < fpr  # as the client checks them
            outputs = {"scores": scores, "p_values": p, "is_outlier": flags, "kl_nats": kl}
            parameters = {"fpr": fpr, "primary": primary, "scores": ",".join(names)}
            body, headers = write_response("fashion-vae-score", outputs, parameters)
            return 200, headers, body
        preds = [
            {
                "scores": {
                    name: {
                        "score": float(scores[i, j]),
                        "p_value": float(p[i, j]),
                        "is_outlier": bool(float(p[i, j]) < fpr),
                    }
                    for j, name in enumerate(names)
                },
                "is_outlier": bool(float(p[i, 0]) < fpr),
                "kl_nats": float(kl[i]),
                "recon_nats": None,
            }
            for i in range(len(first))
        ]
        answer = {"predictions": preds, "fpr": fpr, "primary": primary}
        return 200, {}, json.dumps(answer).encode()


@pytest.fixture
def served(monkeypatch):
    """`cli.main` with make_client building a ScoreServer from the parsed options."""
    made: list[ScoreServer] = []

    def make(args, script=()):
        client = ScoreServer(
            script,
            model=args.model,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            retry=RetryPolicy(retries=args.retries, base_delay=0.0, jitter=0.0),
            protocol=args.protocol,
        )
        made.append(client)
        return client

    monkeypatch.setattr(cli, "make_client", make)
    return made


def write_idx(path, arr: np.ndarray) -> None:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(head + arr.astype(np.uint8).tobytes())


@pytest.fixture
def idx(tmp_path):
    """300 images whose first pixel is their index (mod 256), and labels beside them."""
    images = np.zeros((300, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(300) % 256
    path = tmp_path / "part-images-idx3-ubyte"
    write_idx(path, images)
    write_idx(tmp_path / "part-labels-idx1-ubyte", np.arange(300) % 10)
    return path


def first_pixels(n: int = 300) -> np.ndarray:
    return np.arange(n) % 256


def test_options_and_their_defaults():
    args = cli.build_parser().parse_args(["score", "x-images-idx3-ubyte", "--out", "s.npz"])
    assert (args.fpr, args.mode, args.protocol, args.quiet) == (0.01, "full", "v2", False)
    assert args.run is cli.cmd_score and str(args.out) == "s.npz"
    argv = ["score", "d", "--out", "s.CSV", "--fpr", "0.05", "--mode", "latent", "--quiet"]
    args = cli.build_parser().parse_args([*argv, "--protocol", "json"])
    assert (args.fpr, args.mode, args.protocol, args.quiet) == (0.05, "latent", "json", True)


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--fpr", "0"], "--fpr takes a number in (0, 1), got '0'"),
        (["--fpr", "1"], "got '1'"),
        (["--fpr", "-0.1"], "got '-0.1'"),
        (["--fpr", "nan"], "got 'nan'"),
        (["--fpr", "one"], "got 'one'"),
        (["--mode", "fast"], "invalid choice: 'fast'"),
        (["--out", "s.npy"], "--out must end in .npz or .csv, got 's.npy'"),
        (["--protocol", "grpc"], "invalid choice: 'grpc'"),
    ],
)
def test_bad_options_are_argparse_errors_with_exit_2(extra, says, capsys, served):
    with pytest.raises(SystemExit) as info:
        cli.main(["score", "x", "--out", "s.npz", *extra])
    assert info.value.code == 2 and says in capsys.readouterr().err
    assert served == []  # nothing built, nothing sent


def test_out_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["score", "x"])
    assert info.value.code == 2 and "--out" in capsys.readouterr().err


@PROTOCOLS
def test_npz_holds_every_score_in_input_order_with_labels(idx, tmp_path, served, capsys, protocol):
    out, labels = tmp_path / "deep" / "scores.npz", tmp_path / "labels.npy"
    argv = ["score", str(idx), "--out", str(out), "--labels-out", str(labels)]
    rc = cli.main([*argv, "--batch-size", "50", "--concurrency", "2", "--protocol", protocol])
    assert rc == 0
    (client,) = served
    assert sorted(n for n, _ in client.sent) == [50] * 6  # the batch size, as one call sends
    assert {(p["fpr"], p["mode"]) for _, p in client.sent} == {(0.01, "full")}
    with np.load(out) as got:  # no pickle needed
        f = first_pixels()
        assert got["names"].tolist() == list(FULL) and got["primary"] == "mahalanobis"
        assert got["fpr"] == 0.01 and got["mode"] == "full" and got["model"] == "fashion-vae"
        np.testing.assert_allclose(got["scores"], np.outer(f, [1, 2, 3, 4]))
        np.testing.assert_allclose(got["p_values"][:, 2], 1 / (1.5 + f), rtol=1e-6)
        assert got["is_outlier"].dtype == bool and got["is_outlier"].shape == (300, 4)
        assert np.array_equal(got["outlier"], f > 98)  # 1 / (1.5 + f) < 0.01
        np.testing.assert_allclose(got["kl_nats"], f / 10, rtol=1e-6)
        assert "recon_nats" not in got  # the answers have no such statistic
    assert np.load(labels).tolist() == (np.arange(300) % 10).tolist()
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[0].startswith("scored 300 images with fashion-vae (full) in ")
    assert f"img/s ({protocol}, 6 requests of <= 50 images, 2 in flight, 0 retries)" in stdout[0]
    flagged = int((f > 98).sum())
    assert stdout[1] == (
        f"flagged {flagged} of 300 ({100 * flagged / 300:.1f} %) at fpr 0.01 by mahalanobis "
        f"(neg_elbo {flagged}, complexity {flagged}, latent {flagged})"
    )
    assert stdout[2] == f"wrote {out} (300 x 4 scores), {labels} (300,)"


@PROTOCOLS
def test_csv_has_one_row_per_image_latent_mode(idx, tmp_path, served, capsys, protocol):
    out = tmp_path / "scores.csv"
    argv = ["score", str(idx), "--out", str(out), "--mode", "latent", "--fpr", "0.2", "--quiet"]
    assert cli.main([*argv, "--protocol", protocol]) == 0
    assert {(p["fpr"], p["mode"]) for _, p in served[0].sent} == {(0.2, "latent")}
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "index", "latent", "latent_p_value", "latent_is_outlier", "outlier", "kl_nats"
    ]  # fmt: skip
    f = first_pixels()
    assert [int(r["index"]) for r in rows] == list(range(300))
    np.testing.assert_allclose([float(r["latent"]) for r in rows], f)
    np.testing.assert_allclose([float(r["latent_p_value"]) for r in rows], 1 / (1.5 + f), rtol=1e-6)
    assert [r["outlier"] for r in rows] == [str(int(v > 3)) for v in f]
    assert all(r["outlier"] == r["latent_is_outlier"] for r in rows)
    stdout = capsys.readouterr().out.splitlines()
    flagged = int((f > 3).sum())
    assert (
        stdout[1] == f"flagged {flagged} of 300 ({100 * flagged / 300:.1f} %) at fpr 0.2 by latent"
    )
    assert stdout[2] == f"wrote {out} (300 x 1 scores, 6 columns)"


def test_progress_reaches_every_image(idx, tmp_path, served, capsys):
    cli.main(["score", str(idx), "--out", str(tmp_path / "s.npz"), "--batch-size", "64"])
    err = capsys.readouterr().err
    assert "score fashion-vae" in err and "300/300" in err  # tqdm writes to stderr


def test_labels_missing_is_an_input_error_before_anything_is_sent(tmp_path, served, capsys):
    images = tmp_path / "alone-images-idx3-ubyte"
    write_idx(images, np.zeros((3, 28, 28)))
    argv = ["score", str(images), "--out", str(tmp_path / "s.npz"), "--labels-out", "l.npy"]
    assert cli.main(argv) == 2
    assert "no labels found" in capsys.readouterr().err
    assert served == [] and not (tmp_path / "s.npz").exists()


def test_a_missing_source_and_bad_batch_size_exit_2(tmp_path, capsys):
    out = str(tmp_path / "s.npz")
    assert cli.main(["score", str(tmp_path / "nope"), "--out", out]) == 2
    assert "error: " in capsys.readouterr().err
    images = tmp_path / "x-images-idx3-ubyte"
    write_idx(images, np.zeros((3, 28, 28)))
    assert cli.main(["score", str(images), "--out", out, "--batch-size", "0"]) == 2
    assert "error: batch_size must be in [1, 256], got 0" in capsys.readouterr().err


@PROTOCOLS
def test_a_server_refusal_exits_1_with_its_message(idx, tmp_path, monkeypatch, capsys, protocol):
    refusal = {"error": "parameter 'fpr': must be between 0.001 and 0.5"}
    answer = (400, {}, json.dumps(refusal).encode())
    monkeypatch.setattr(
        cli, "make_client", lambda args: ScoreServer([answer], protocol=args.protocol)
    )
    argv = ["score", str(idx), "--out", str(tmp_path / "s.npz"), "--fpr", "0.9", "--quiet"]
    assert cli.main([*argv, "--protocol", protocol]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: HTTP 400: parameter 'fpr'") and "-score" in err
    assert not (tmp_path / "s.npz").exists()

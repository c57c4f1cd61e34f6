"""The TorchServe adapter inside TorchServe's own Python worker code, no frontend.

An archive built by `serving/archive.py` is unpacked and loaded with
TorchServe's `TsModelLoader` (as its worker does); batches go through
`Service.predict`, which frames the answer exactly as the worker sends it to
the Java frontend. We decode that frame and check each request's status,
headers and body, and that every emitted metric line parses with the
frontend's pattern (org.pytorch.serve.metrics.Metric.PATTERN, 0.12).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import struct
import sys
import zipfile

import pytest
import yaml
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.model_loader import TsModelLoader

from handlers.metrics import BASE_DIMS, SPECS, STAGES
from handlers.operations import OPERATIONS
from paths import ROOT
from serving.archive import build_archives
from tests.handlers.tiny import LATENT, pixels

METRIC_LINE = re.compile(
    r"\s*([\w\s]+)\.([\w\s]+):([0-9\-,.e]+)\|#([^|]*)(\|#type:([^|,]+))?"
    r"\|#hostname:([^,]+),([^,]+)(,(.*))?"
)


@pytest.fixture(scope="module")
def services(vae_dir, tmp_path_factory):
    """{op: (Service, unpacked model dir)} for the tiny VAE's four archives."""
    env = pytest.MonkeyPatch()  # the handler sets TS_DECODE_INPUT_REQUEST; undo afterwards
    env.setenv("TS_DECODE_INPUT_REQUEST", "true")
    out = tmp_path_factory.mktemp("mar")
    build_archives(vae_dir.parent, out, models=[vae_dir.name], log=lambda *_: None)
    loaded = {}
    for op in OPERATIONS:
        model_dir = out / f"unpacked-{op}"
        with zipfile.ZipFile(out / f"{vae_dir.name}-{op}.mar") as z:
            z.extractall(model_dir)
        manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
        metrics = MetricsCacheYamlImpl(config_file_path=str(ROOT / "deploy" / "metrics.yaml"))
        metrics.initialize_cache()
        metrics.model_name = f"{vae_dir.name}-{op}"
        sys.path.insert(0, str(model_dir))
        try:
            service = TsModelLoader().load(
                metrics.model_name,
                str(model_dir),
                manifest["model"]["handler"],
                None,
                8,
                metrics_cache=metrics,
            )
        finally:
            sys.path.remove(str(model_dir))
        service.set_cl_socket(None)
        loaded[op] = (service, model_dir)
    yield loaded
    env.undo()


def wire_request(i: int, body: bytes, content_type: str = "application/json") -> dict:
    """One request as the frontend frames it (ts/protocol/otf_message_handler.py)."""
    return {
        "requestId": f"req-{i}".encode(),
        "parameters": [{"name": "body", "contentType": content_type, "value": body}],
        "headers": [{"name": b"Content-Type", "value": content_type.encode()}],
    }


def read_response(frame: bytes) -> tuple[int, list[dict]]:
    """Decode create_predict_response's frame into per-request dicts."""
    pos = 0

    def i32():
        nonlocal pos
        (v,) = struct.unpack_from("!i", frame, pos)
        pos += 4
        return v

    def blob():
        nonlocal pos
        n = i32()
        pos += n
        return frame[pos - n : pos]

    code = i32()
    blob()  # message
    out = []
    while i32() != -1:
        pos -= 4
        req = {"id": blob().decode(), "content_type": blob().decode()}
        req["status"], req["phrase"] = i32(), blob().decode()
        req["headers"] = {blob().decode(): blob().decode() for _ in range(i32())}
        req["body"] = blob()
        out.append(req)
    return code, out


def test_archive_layout(services):
    _, model_dir = services["encode"]
    assert (model_dir / "encode_handler.py").exists()
    assert (model_dir / "handlers" / "ts_adapter.py").exists()
    assert (model_dir / "encoder.pt").exists() and not (model_dir / "decoder.pt").exists()
    cfg = yaml.safe_load((model_dir / "model-config.yaml").read_text())
    assert cfg["batchSize"] == 8 and cfg["handler"]["chunk_size"] >= 1


def test_batch_with_a_bad_request_per_request_status(services, caplog):
    service, _ = services["encode"]
    good = json.dumps({"instances": pixels(3)}).encode()
    batch = [
        wire_request(0, good),
        wire_request(1, b'{"instances": [{"pixels": [[0.5]]}]}'),
        wire_request(2, b"\xff\xfe not json"),
        wire_request(3, json.dumps({"instances": pixels(1)}).encode()),
    ]
    with caplog.at_level(logging.INFO):
        code, replies = read_response(service.predict(batch))
    assert code == 200
    assert [r["id"] for r in replies] == ["req-0", "req-1", "req-2", "req-3"]
    assert [(r["status"], r["phrase"]) for r in replies] == [
        (200, "OK"),
        (400, "Bad Request"),
        (400, "Bad Request"),
        (200, "OK"),
    ]
    assert all(r["content_type"] == "application/json" for r in replies)
    assert len({r["headers"]["X-Latentserve-Batch-Id"] for r in replies}) == 1
    assert replies[0]["headers"]["X-Latentserve-Batch-Items"] == "4"
    assert len(json.loads(replies[0]["body"])["predictions"]) == 3
    assert json.loads(replies[1]["body"])["error"]["field"] == "instances[0].pixels"
    assert json.loads(replies[2]["body"])["error"]["code"] == "bad_json"
    check_metric_lines(caplog, "encode", expect_items=4, expect_rejected=2)


def check_metric_lines(caplog, op: str, expect_items: int, expect_rejected: int) -> None:
    # the adapter writes a batch's metric lines in one record, one line each
    messages = [r.getMessage() for r in caplog.records]
    lines = [line for m in messages for line in m.split("\n") if line.startswith("[METRICS]")]
    ours = [line for line in lines if "latentserve_" in line]
    assert ours, lines
    items = rejected = 0.0
    for line in lines:
        m = METRIC_LINE.fullmatch(line[len("[METRICS]") :])
        assert m, f"the frontend could not parse: {line}"
        name, dims = m.group(1), [d.split(":")[0] for d in m.group(4).split(",")]
        if name in SPECS:
            assert dims == list(BASE_DIMS + SPECS[name].dims), line
            assert m.group(6) == SPECS[name].kind.upper()
            items += float(m.group(3)) if name == "latentserve_items_total" else 0
            rejected += float(m.group(3)) if name == "latentserve_rejected_total" else 0
    assert (items, rejected) == (expect_items, expect_rejected)


def test_the_workers_per_batch_log_line_is_dropped_at_the_source(services, caplog):
    """Loading a handler filters TorchServe's per-batch INFO line on the root logger
    (retrieve_msg logs it for every batch); other lines still pass."""
    with caplog.at_level(logging.INFO):
        logging.info("Backend received inference at: %d", 1700000000)
        logging.info("Backend worker process died.")
    assert [r.getMessage() for r in caplog.records] == ["Backend worker process died."]


def test_metric_lines_match_torchserves_own_format(caplog):
    """Our lines equal ts.metrics.caching_metric's for the same metric (minus the
    optional request ids), so the frontend parses them as its own."""
    from ts.metrics.caching_metric import CachingMetric
    from ts.metrics.metric_type_enum import MetricTypes

    from handlers.metrics import Recorder
    from handlers.ts_adapter import metric_lines

    rec = Recorder()
    rec.add("latentserve_stage_seconds", 0.0125, Operation="encode", Stage=STAGES[1])
    rec.add("latentserve_items_total", 3, Operation="encode")
    ours = metric_lines(rec, "m-encode", 1.5, "host-1", 1700000000)
    assert len(ours) == 3
    for line, o in zip(ours, rec.observations, strict=False):
        spec = SPECS[o.name]
        theirs = CachingMetric(
            o.name, spec.unit, list(BASE_DIMS + spec.dims), MetricTypes(spec.kind)
        )
        caplog.clear()
        with caplog.at_level(logging.INFO):
            theirs.add_or_update(o.value, ["m-encode", "Model", *o.labels])
        (record,) = caplog.records
        want = record.getMessage().rsplit("|#hostname:", 1)[0]
        assert line.rsplit("|#hostname:", 1)[0] == want
        assert line.endswith("|#hostname:host-1,1700000000")
    assert ours[-1].startswith(
        "[METRICS]HandlerTime.Milliseconds:1.5|#ModelName:m-encode,Level:Model|#type:GAUGE|"
    )
    for line in ours:
        assert METRIC_LINE.fullmatch(line[len("[METRICS]") :]), line


def test_raw_png_body_and_decode_and_sample(services):
    enc, _ = services["encode"]
    dec, _ = services["decode"]
    smp, _ = services["sample"]
    code, (s,) = read_response(smp.predict([wire_request(0, b'{"n": 2, "seed": 4}')]))
    assert code == 200 and s["status"] == 200
    png = base64.b64decode(json.loads(s["body"])["predictions"][0]["image_b64"])
    _, (e,) = read_response(enc.predict([wire_request(0, png, "image/png")]))
    assert e["status"] == 200
    z = json.loads(e["body"])["predictions"][0]["z_mean"]
    assert len(z) == LATENT
    req = json.dumps({"instances": [{"z": z}], "format": "array"}).encode()
    _, (d,) = read_response(dec.predict([wire_request(0, req)]))
    assert d["status"] == 200 and len(json.loads(d["body"])["predictions"][0]["pixels"]) == 28


def test_preparsed_json_bodies_work_too(services):
    """With TS_DECODE_INPUT_REQUEST unset TorchServe passes parsed JSON: same answers."""
    service, _ = services["sample"]
    batch = [
        {
            "requestId": b"r",
            "parameters": [
                {"name": "body", "contentType": "application/json", "value": {"n": 1, "seed": 1}}
            ],
            "headers": [],
        }
    ]
    _, (r,) = read_response(service.predict(batch))
    assert r["status"] == 200 and json.loads(r["body"])["seed"] == 1


def kserve_request(i: int, body: bytes, headers: dict[str, str]) -> dict:
    """A request on TorchServe's KServe route: the frontend adds `explain`, no `url_path`."""
    frame = wire_request(i, body, headers.pop("Content-Type", "application/octet-stream"))
    frame["headers"] += [{"name": b"explain", "value": b"False"}]
    frame["headers"] += [{"name": k.encode(), "value": v.encode()} for k, v in headers.items()]
    return frame


def test_v2_binary_and_json_api_requests_in_one_batch(services):
    """A binary v2 answer keeps its bytes, content type and header length through
    TorchServe's framing; the /predictions request beside it is the JSON API."""
    service, _ = services["encode"]
    pixels_u8 = bytes(range(256)) * 3 + bytes(16)  # 784 bytes: one 28 x 28 image
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, 28, 28],
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": 784},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    predictions = wire_request(1, json.dumps({"instances": pixels(1)}).encode())
    predictions["headers"] += [{"name": b"url_path", "value": b""}]
    batch = [
        kserve_request(0, head + pixels_u8, {"Inference-Header-Content-Length": str(len(head))}),
        predictions,
        kserve_request(2, b'{"inputs": []}', {"Content-Type": "application/json"}),
    ]
    code, (v2, js, bad) = read_response(service.predict(batch))
    assert code == 200 and [r["status"] for r in (v2, js, bad)] == [200, 200, 400]
    assert v2["content_type"] == "application/octet-stream"
    split = int(v2["headers"]["Inference-Header-Content-Length"])
    answer = json.loads(v2["body"][:split])
    assert answer["model_name"] == "tiny-vae-encode"
    sizes = [o["parameters"]["binary_data_size"] for o in answer["outputs"]]
    assert sizes == [4 * LATENT, 4 * LATENT] and len(v2["body"]) == split + sum(sizes)
    assert js["content_type"] == "application/json"
    assert len(json.loads(js["body"])["predictions"]) == 1
    assert json.loads(bad["body"]) == {"error": "input 'image': is missing"}

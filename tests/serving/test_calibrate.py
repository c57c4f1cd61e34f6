"""The shipped models' score calibration and its recorded evaluation (`make calibrate`)."""

from __future__ import annotations

import json

import pytest

from handlers.calibration import PRIMARY, Calibration
from paths import DOCS, RESULTS, ROOT, SHIPPED_MODELS, STORE

RECORDED = json.loads((RESULTS / "scores.json").read_text())


@pytest.mark.parametrize("model", SHIPPED_MODELS)
def test_every_shipped_manifest_is_calibrated_on_its_validation_split(model):
    manifest = json.loads((STORE / model / "manifest.json").read_text())
    cal = Calibration.from_manifest(manifest)
    held_out = manifest["calibration"]["held_out"]
    tc = manifest["train_config"]
    assert cal.held_out == held_out["images"] == tc["val_size"]
    assert held_out["dataset"] == tc["dataset"] and held_out["split"].startswith("validation")
    assert held_out["dataset_sha256"] == manifest["dataset"]["sha256"]
    assert len(cal.levels) == 1001 and cal.levels[0] == 0 and cal.levels[-1] == 1


@pytest.mark.parametrize("model", SHIPPED_MODELS)
def test_the_recorded_evaluation_meets_the_targets_and_is_what_the_docs_quote(model):
    r = RECORDED[model]
    best = r["rows"][PRIMARY]
    assert best["auroc"] == max(v["auroc"] for v in r["rows"].values())
    assert best["auroc"] >= 0.97 and abs(best["fpr_at_1pct"] - 0.01) <= 0.005
    readme = (ROOT / "README.md").read_text()
    assert f"| {model} |" in readme and f"**{best['auroc']:.4f}**" in readme
    table = (DOCS / "scores.md").read_text()
    for score, v in r["rows"].items():
        cells = f"| {score} | " + ("**{:.4f}**" if score == PRIMARY else "{:.4f}").format(
            v["auroc"]
        )
        assert f"| {model} | {r['in']} → {r['out']} {cells} | {v['auprc']:.4f} |" in table

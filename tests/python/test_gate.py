"""The int8 accuracy gate (``lgms_models.gate``): frames as lgms-edge feeds
them, held out in order, and a model written only when its masks, run
through lgms-edge, agree with the f32 masks.

The seeded random-weight model (BatchNorm statistics from phantom frames)
is the hard case: all-int8, its masks agree with its f32 masks far below
0.97. Within the small evaluation budget here (one calibration method, a
few candidates) the gate refuses it; the full search reaches 0.97 only by
keeping 31 of its 40 convs f32 (docs/benchmarks.md). Few frames keep this
file to well under a minute.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import numpy as np
import onnx
import pytest

from lgms_models import gate, phantom
from lgms_models.export import get_metadata

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RANDOM_F32 = os.path.join(ROOT, "models", "lgmsnet-random.f32.onnx")


def test_iou_is_the_authors_formula():
    a = np.array([1, 1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 1, 0], bool)
    assert gate.iou(a, b) == pytest.approx((2 + 1e-5) / (4 + 1e-5))
    assert gate.iou(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_keep_schedule_grows_and_never_keeps_everything():
    assert gate.keep_schedule(40) == [1, 2, 3, 4, 6, 9, 13, 19, 28, 39]
    assert gate.keep_schedule(1) == []


def test_frames_from_an_lgms_edge_recording(tmp_path):
    """record = "input" writes a Y4M; the gate reads it through lgms-edge,
    splits it in order and hashes the held-out inputs."""
    rec = tmp_path / "rec.y4m"
    cfg = tmp_path / "b.toml"
    cfg.write_text(
        f'display = "null"\nframes = 4\nrecord = "input"\nrecord_path = "{rec}"\n'
        f'[phantom]\nwidth = 160\nheight = 120\n[model]\npath = "{RANDOM_F32}"\n'
    )
    r = subprocess.run(
        [phantom.require_binary(), "run", "--config", str(cfg)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr
    work = tmp_path / "w"
    work.mkdir()
    f = gate.Frames(RANDOM_F32, str(rec), str(work), count=4, held_out=0.25)
    assert f.calib_names == ["00000", "00001", "00002"] and f.held_names == ["00003"]
    assert len(f.calib) == 3 and f.held[0].shape == (1, 3, 256, 256)
    with open(work / "held-out" / "00003.f32", "rb") as fh:
        assert f.sha256 == hashlib.sha256(fh.read()).hexdigest()


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    d = tmp_path_factory.mktemp("calib")
    phantom.write_dataset(str(d), 4, seed=31)
    return str(d)


def run_gate(calib, out, *extra):
    args = ["--model", RANDOM_F32, "--out", out, "--calib", calib, "--frames", "4"]
    return gate.main([*args, "--methods", "minmax", "--max-evals", "4", *extra])


def test_random_checkpoint_is_refused_and_nothing_is_written(calib, tmp_path, capsys):
    out = str(tmp_path / "r.int8.onnx")
    report = str(tmp_path / "r.gate.json")
    assert run_gate(calib, out, "--report", report) == 2
    assert not os.path.exists(out)
    err = capsys.readouterr().err
    assert "FAILED: mean mask IoU vs f32 0." in err and "< gate 0.97" in err
    assert "most sensitive layers: /" in err and "no model written" in err
    with open(report, encoding="utf-8") as f:
        rep = json.load(f)
    assert not rep["passed"] and rep["agreement_mean_iou"] < 0.97
    assert rep["evaluations"] <= 4 and rep["curve"] and rep["sensitivity"]
    assert {"vs_lgms_edge_f32", "vs_ort_f32"} <= set(rep["ort_agreement_mean_iou"])


def test_force_writes_a_model_recorded_as_failing_that_lgms_edge_refuses(calib, tmp_path):
    out = str(tmp_path / "r.int8.onnx")
    assert run_gate(calib, out, "--force", "--max-evals", "1") == 0
    md = get_metadata(out)
    assert md["lgms.precision"] == "int8" and md["lgms.gate.int8.passed"] == "false"
    assert float(md["lgms.gate.int8.agreement_mean_iou"]) < 0.97
    assert md["lgms.gate.int8.held_out_frames"] == "1" and len(md["lgms.gate.int8.held_out_sha256"]) == 64
    assert any(n.op_type == "QLinearConv" for n in onnx.load(out).graph.node)
    cmd = [phantom.require_binary(), "info", out]
    info = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert info.returncode == 0 and "gate int8:    FAILED" in info.stdout
    assert "refuses it as int8 unless allow_ungated = true" in info.stdout

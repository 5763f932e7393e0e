"""The peer benchmark (lgms_models/bench_peers.py) runs all three runtimes on the
same file and reports medians and ratios."""

import json
import os

import pytest

from lgms_models import bench_peers, phantom

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_peer_benchmark_reports_every_runtime_and_ratios(tmp_path, monkeypatch):
    binary = phantom.require_binary()  # the release build; fails with the fix if missing
    monkeypatch.chdir(ROOT)
    out = tmp_path / "peers.json"
    rc = bench_peers.main(
        [
            "--bin",
            binary,
            "--threads",
            "1",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--int8",
            "",
            "--stock",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    runtimes = {r["runtime"] for r in report["rows"]}
    assert {"lgms-edge (tract)", "tract stock graph", "onnxruntime", "pytorch eager"} <= runtimes
    assert all(r["median_ms"] > 0 for r in report["rows"])
    peers = {r["peer"] for r in report["ratios"]}
    assert {"onnxruntime", "pytorch eager", "tract stock graph"} <= peers
    assert all(r["ratio"] > 0 for r in report["ratios"])


def test_missing_binary_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        bench_peers.main(["--bin", str(tmp_path / "nope"), "--json", ""])


def test_goals_are_ratios_of_this_runs_medians():
    medians = {
        ("lgms-edge (tract)", "i8", 1): 100.0,
        ("lgms-edge (tract)", "i8", 2): 55.0,
        ("onnxruntime", "f", 2): 120.0,
        ("onnxruntime", "i8", 2): 80.0,
        ("lgms-edge (tract)", "f", 1): 300.0,
        ("onnxruntime", "f", 1): 250.0,
        ("lgms-edge (tract)", "f", 2): 150.0,
    }
    goals = bench_peers.check_goals(lambda r, m, t: medians.get((r, m, t)), "f", "i8", [1, 2])
    by = {g["goal"]: g for g in goals}
    assert by["int8 vs ONNX Runtime f32, 2 threads"]["met"]  # 0.46
    assert not by["int8 vs ONNX Runtime int8, 2 threads"]["met"]  # 0.69
    assert by["int8 gain from the second thread (1 / 2 threads)"]["met"]  # 1.82
    assert not by["f32 vs ONNX Runtime f32, 1 thread(s)"]["met"]  # 1.2
    assert not by["f32 vs ONNX Runtime f32, 2 thread(s)"]["met"]  # 1.25
    # A goal whose medians were not measured is left out, not passed.
    assert bench_peers.check_goals(lambda r, m, t: None, "f", "i8", [1, 2]) == []

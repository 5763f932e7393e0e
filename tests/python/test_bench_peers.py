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

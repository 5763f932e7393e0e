"""Peer benchmark: the same ONNX file through lgms-edge (tract), ONNX Runtime and PyTorch.

    python3 -m lgms_models.bench_peers [--threads 1,2] [--runs 15] [--json out/bench-peers.json]
    make bench-peers

For each thread count, in one run on one machine:
- lgms-edge: ``lgms-edge bench --model F32 --threads T`` (its ``inference``
  stage: tract only, input already preprocessed), and the int8 model;
- ONNX Runtime: the same f32 and int8 files, ``intra_op_num_threads=T``,
  one inter-op thread, all graph optimisations;
- PyTorch eager: the checkpoint the f32 file was exported from
  (``lgms.checkpoint`` metadata), ``torch.set_num_threads(T)``, no_grad.

Each is warmed up, then timed ``--runs`` times; the medians and the ratios
lgms-edge / peer are printed (a ratio < 1 means lgms-edge is faster). Input
values do not change the work any of these runtimes do (no data-dependent
branches in LGMSNet), so ONNX Runtime and PyTorch get the committed parity
input and lgms-edge its phantom frames.

lgms-edge with ``--threads > 1`` needs a binary built with the
``multithread`` feature (``make bench-peers`` builds one); without it tract
runs on one thread and the script says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from lgms_models import phantom

DEFAULT_F32 = "models/lgmsnet-phantom-us.f32.onnx"
DEFAULT_INT8 = "models/lgmsnet-phantom-us.int8.onnx"
DEFAULT_INPUT = "models/parity/image0.input.f32"
DEFAULT_CKPT = "models/checkpoints/lgmsnet-phantom-us.pth"


def timed(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def load_input(path: str) -> np.ndarray:
    x = np.fromfile(path, dtype="<f4")
    if x.size != 3 * 256 * 256:
        raise SystemExit(
            f"{path}: {x.size} values, expected 1x3x256x256; "
            "fix: regenerate with `python3 -m lgms_models.parity`"
        )
    return x.reshape(1, 3, 256, 256)


def bench_ort(model: str, x: np.ndarray, threads: int, runs: int, warmup: int) -> list[float]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return timed(lambda: sess.run(None, {name: x}), runs, warmup)


def bench_torch(
    model_path: str, ckpt: str, x: np.ndarray, threads: int, runs: int, warmup: int
) -> list[float] | None:
    import torch

    from lgms_models.export import get_metadata, sha256_file
    from lgms_models.lgmsnet import build_model, load_checkpoint

    want = get_metadata(model_path).get("lgms.checkpoint_sha256", "")
    if not os.path.isfile(ckpt) or sha256_file(ckpt) != want:
        print(
            f"pytorch: {ckpt} is missing or is not the checkpoint {model_path} was "
            "exported from (lgms.checkpoint_sha256); skipped",
            file=sys.stderr,
        )
        return None
    torch.set_num_threads(threads)
    net = build_model()
    load_checkpoint(net, ckpt)
    net.eval()
    t = torch.from_numpy(x)
    with torch.no_grad():
        return timed(lambda: net(t), runs, warmup)


def bench_lgms(
    binary: str, model: str, threads: int, runs: int, warmup: int, extra: list[str]
) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory() as d:
        js = os.path.join(d, "bench.json")
        cmd = [
            binary,
            "bench",
            "--model",
            model,
            "--threads",
            str(threads),
            "--frames",
            str(runs),
            "--warmup",
            str(warmup),
            "--json",
            js,
            *extra,
        ]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
        with open(js) as f:
            report = json.load(f)
    inf = next((s for s in report["stages"] if s["stage"] == "inference"), None)
    if inf is None:
        raise SystemExit(f"{binary} bench wrote no inference stage")
    return inf, report


def check_goals(med, f32: str, int8: str, threads: list[int]) -> list[dict]:
    """The real-time goals, each as a ratio of two medians of this run.

    ``med(runtime, model, threads)`` returns a median in ms or None; a goal
    whose medians are missing (thread count or runtime not run) is left out.
    """
    goals = []

    def goal(name: str, num, den, op: str, limit: float):
        if num and den:
            value = num / den
            met = value <= limit if op == "<=" else value >= limit
            goals.append({"goal": name, "value": round(value, 3), "op": op, "limit": limit, "met": met})

    ours = "lgms-edge (tract)"
    if int8:
        goal(
            "int8 vs ONNX Runtime f32, 2 threads",
            med(ours, int8, 2),
            med("onnxruntime", f32, 2),
            "<=",
            0.5,
        )
        goal(
            "int8 vs ONNX Runtime int8, 2 threads", med(ours, int8, 2), med("onnxruntime", int8, 2), "<=", 0.6
        )
        goal(
            "int8 gain from the second thread (1 / 2 threads)",
            med(ours, int8, 1),
            med(ours, int8, 2),
            ">=",
            1.7,
        )
    for t in threads:
        goal(
            f"f32 vs ONNX Runtime f32, {t} thread(s)",
            med(ours, f32, t),
            med("onnxruntime", f32, t),
            "<=",
            1.0,
        )
    return goals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--f32", default=DEFAULT_F32)
    ap.add_argument("--int8", default=DEFAULT_INT8, help="'' to skip int8")
    ap.add_argument("--input", default=DEFAULT_INPUT)
    ap.add_argument("--ckpt", default=DEFAULT_CKPT, help="checkpoint of --f32, for PyTorch")
    ap.add_argument(
        "--bin",
        default=phantom.binary_path(),
        help=f"lgms-edge binary (default: ${phantom.ENV_VAR}, else target/release/lgms-edge)",
    )
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--int8-runs", type=int, default=None, help="runs of the int8 model (default: --runs)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument(
        "--stock", action="store_true", help="also time lgms-edge with tract's stock graph (no lgms ops)"
    )
    ap.add_argument("--json", default="out/bench-peers.json")
    a = ap.parse_args(argv)

    if not os.path.isfile(a.bin):
        raise SystemExit(f"{a.bin} not found; fix: cargo build --release --features multithread")
    x = load_input(a.input)
    threads = [int(t) for t in a.threads.split(",") if t.strip()]
    rows = []

    def row(runtime: str, model: str, t: int, ms: list[float] | float | None, note: str = ""):
        if ms is None:
            return
        med = ms if isinstance(ms, float) else statistics.median(ms)
        rows.append(
            {
                "runtime": runtime,
                "model": os.path.basename(model),
                "threads": t,
                "median_ms": round(med, 2),
                "note": note,
            }
        )
        print(f"  {runtime:<22} {os.path.basename(model):<34} threads {t}: {med:9.1f} ms {note}", flush=True)

    for t in threads:
        print(f"threads = {t}", flush=True)
        int8_runs = a.int8_runs if a.int8_runs is not None else a.runs
        models = [(a.f32, a.runs)] + ([(a.int8, int8_runs)] if a.int8 else [])
        for m, runs in models:
            inf, _ = bench_lgms(a.bin, m, t, runs, 1 if runs < 5 else a.warmup, [])
            row("lgms-edge (tract)", m, t, float(inf["p50_ms"]))
            if a.stock:
                inf, _ = bench_lgms(a.bin, m, t, runs, 1 if runs < 5 else a.warmup, ["--stock"])
                row("tract stock graph", m, t, float(inf["p50_ms"]))
            row("onnxruntime", m, t, bench_ort(m, x, t, a.runs, a.warmup))
        if not a.no_torch:
            row("pytorch eager", a.f32, t, bench_torch(a.f32, a.ckpt, x, t, a.runs, a.warmup))

    def med(runtime: str, model: str, t: int) -> float | None:
        for r in rows:
            if r["runtime"] == runtime and r["model"] == os.path.basename(model) and r["threads"] == t:
                return r["median_ms"]
        return None

    print("\nratios (lgms-edge / peer; < 1 = lgms-edge faster):")
    ratios = []
    for t in threads:
        for m in [a.f32] + ([a.int8] if a.int8 else []):
            ours = med("lgms-edge (tract)", m, t)
            for peer in ["onnxruntime", "pytorch eager", "tract stock graph"]:
                theirs = med(peer, m, t)
                if ours and theirs:
                    ratios.append(
                        {
                            "model": os.path.basename(m),
                            "threads": t,
                            "peer": peer,
                            "ratio": round(ours / theirs, 3),
                        }
                    )
                    print(f"  {os.path.basename(m):<34} threads {t} vs {peer:<18} {ours / theirs:6.2f}x")
        if a.int8:
            i8, f32 = med("lgms-edge (tract)", a.int8, t), med("lgms-edge (tract)", a.f32, t)
            if i8 and f32:
                ratios.append(
                    {"model": "int8/f32", "threads": t, "peer": "lgms-edge f32", "ratio": round(i8 / f32, 3)}
                )
                print(f"  lgms-edge int8 / lgms-edge f32            threads {t}: {i8 / f32:6.2f}x")
    goals = check_goals(med, a.f32, a.int8, threads)
    if goals:
        print("\nreal-time goals (this machine, this run):")
        for g in goals:
            verdict = "met" if g["met"] else "MISSED"
            print(f"  {g['goal']:<58} {g['value']:6.2f}x (goal {g['op']} {g['limit']}x): {verdict}")
    if a.json:
        os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
        import platform

        import onnxruntime

        with open(a.json, "w") as f:
            json.dump(
                {
                    "machine": platform.machine(),
                    "cpus": os.cpu_count(),
                    "onnxruntime": onnxruntime.__version__,
                    "rows": rows,
                    "ratios": ratios,
                    "goals": goals,
                },
                f,
                indent=1,
            )
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

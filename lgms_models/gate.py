"""Accuracy-gated int8 (and f16) models, measured on the user's own frames
through lgms-edge itself.

    python3 -m lgms_models.gate --model x.f32.onnx --out x.int8.onnx --calib FRAMES [--gate 0.97]
    python3 -m lgms_models.gate --precision f16 --model x.f32.onnx --calib FRAMES

``FRAMES`` is a folder of pictures of any size (or one with ``images/``), a
``.y4m`` file, or a recording made by lgms-edge (``record = "input"``, a
Y4M file). Why each step:

* **The runtime's own inputs.** ``lgms-edge masks --inputs`` runs the f32
  model on the frames and writes the network inputs after lgms-edge's own
  resize and normalisation, and the f32 masks. Calibration and every
  measurement use exactly these tensors, so nothing depends on a second
  implementation of the preprocessing.
* **Held-out frames.** The frames are split in order: the first ones
  calibrate, the last ``--held-out`` fraction is never seen by the
  calibration and is where agreement is measured (a block, not every n-th
  frame, because neighbouring video frames are near copies of each other).
* **Measured through lgms-edge.** Every candidate int8 model runs in
  ``lgms-edge masks`` (tract plus lgms-edge's int8 conv kernels); the
  agreement is the mean over held-out frames of the IoU between its mask
  and the f32 mask (the authors' IoU formula). ONNX Runtime's agreement of
  the chosen model is reported beside it.
* **Search.** Calibration methods first, the first that reaches the gate
  kept (MinMax, Percentile, Entropy; per-channel weights, per-tensor
  activations, which is what the int8 conv kernel takes), then mixed
  precision: each quantised conv's sensitivity is
  the agreement gained by keeping only it in f32 ("all but one"); the most
  sensitive convs are kept in f32 one at a time until the gate is met.
  Every evaluation is one lgms-edge run; ``--max-evals`` bounds them.
* **Enforced.** A model is written only when the agreement reaches the
  gate; otherwise the tool exits 2 naming the sensitive layers and the
  agreement reached (``--force`` writes it anyway, recorded as failing,
  and exits 0: the file was asked for, and lgms-edge run still refuses it).
  The record goes into the model's metadata (``lgms.gate.int8.*``; for
  f16, ``lgms.gate.f16.*`` in the f32 file, which f16 is converted from at
  load), where ``lgms-edge info`` prints it and ``lgms-edge run`` checks it.

The trade-off curve (layers kept f32 -> agreement -> ms per inference in
lgms-edge) is printed as a table and written to ``--report`` (JSON).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod

from lgms_models import phantom
from lgms_models.export import INPUT_SHAPE, ort_run, set_metadata
from lgms_models.quantize import calibrate, quantizable_convs, quantize

DEFAULT_GATE = 0.97
METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
SMOOTH = 1e-5  # the authors' IoU smoothing


class GateError(SystemExit):
    """The tool cannot measure (bad frames, lgms-edge failed): exit 1."""

    def __init__(self, msg: str):
        super().__init__(f"gate: {msg}")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """The authors' IoU of two binary masks."""
    a, b = a > 0, b > 0
    return float((np.logical_and(a, b).sum() + SMOOTH) / (np.logical_or(a, b).sum() + SMOOTH))


def lgms_edge_masks(
    model: str,
    frames: str,
    out: str,
    inputs: bool = False,
    limit: int | None = None,
    f16: bool = False,
    step: int = 1,
) -> dict:
    """``lgms-edge masks``: masks (and inputs) written under ``out``; its JSON report."""
    cmd = [phantom.require_binary(), "masks", "--model", model, "--frames", frames, "--out", out]
    if inputs:
        cmd.append("--inputs")
    if limit:
        cmd += ["--limit", str(limit)]
    if step > 1:
        cmd += ["--step", str(step)]
    if f16:
        cmd.append("--f16")
    env = {**os.environ, "RUST_LOG": "warn"}
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if r.returncode != 0:
        raise GateError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stderr.strip()}")
    with open(os.path.join(out, "masks.json"), encoding="utf-8") as f:
        return json.load(f)


def read_mask(path: str) -> np.ndarray:
    m = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise GateError(f"cannot read mask {path}")
    return m > 127


class Frames:
    """The user's frames as lgms-edge feeds them, split into calibration and held-out."""

    def __init__(
        self,
        f32_model: str,
        source: str,
        work: str,
        count: int,
        held_out: float,
        desc: str | None = None,
        step: int = 1,
    ):
        if not os.path.exists(source):
            raise GateError(f"frames {source!r} not found; fix: CALIB=a picture folder or a .y4m file")
        self.source = source
        self.desc = desc or source
        ref = os.path.join(work, "f32")
        rep = lgms_edge_masks(f32_model, source, ref, inputs=True, limit=count, step=step)
        names = rep["names"]
        if len(names) < 2:
            raise GateError(f"{source} gave {len(names)} frame(s); the gate needs 2 or more")
        n_held = min(len(names) - 1, max(1, round(len(names) * held_out)))
        self.calib_names, self.held_names = names[: len(names) - n_held], names[len(names) - n_held :]
        inputs = os.path.join(ref, "inputs")
        self.held_dir = os.path.join(work, "held-out")
        os.makedirs(self.held_dir)
        h = hashlib.sha256()
        for n in self.held_names:
            src = os.path.join(inputs, f"{n}.f32")
            shutil.copyfile(src, os.path.join(self.held_dir, f"{n}.f32"))
            with open(src, "rb") as f:
                h.update(f.read())
        self.sha256 = h.hexdigest()
        self.f32_ms = rep["mean_infer_ms"]
        self.calib = [self._tensor(os.path.join(inputs, f"{n}.f32")) for n in self.calib_names]
        self.held = [self._tensor(os.path.join(inputs, f"{n}.f32")) for n in self.held_names]
        self.f32_masks = [read_mask(os.path.join(ref, "masks", f"{n}.png")) for n in self.held_names]

    @staticmethod
    def _tensor(path: str) -> np.ndarray:
        return np.fromfile(path, dtype="<f4").reshape(INPUT_SHAPE)


class Search:
    """Candidate models evaluated through lgms-edge, bounded by ``max_evals``."""

    def __init__(self, f32_model: str, frames: Frames, work: str, max_evals: int, verbose: bool = True):
        self.f32_model, self.frames, self.work = f32_model, frames, work
        self.max_evals, self.evals, self.verbose = max_evals, 0, verbose
        self.ranges: dict[str, object] = {}
        self.convs = quantizable_convs(onnx.load(f32_model, load_external_data=False))

    def budget_left(self) -> bool:
        return self.evals < self.max_evals

    def model_path(self, tag: str) -> str:
        return os.path.join(self.work, f"{tag}.int8.onnx")

    def build(self, method: str, keep: list[str], tag: str, extra_metadata: dict | None = None) -> str:
        if method not in self.ranges:
            t = time.time()
            self.ranges[method] = calibrate(self.f32_model, self.frames.calib, METHODS[method])
            if self.verbose:
                print(f"  calibrated {method} on {len(self.frames.calib)} frames in {time.time() - t:.0f} s")
        out = self.model_path(tag)
        quantize(
            self.f32_model,
            out,
            None,
            per_channel=True,
            method=METHODS[method],
            calib_desc=f"{len(self.frames.calib)} frames of {self.frames.desc}",
            ranges=self.ranges[method],
            keep_f32=keep,
            extra_metadata=extra_metadata,
        )
        return out

    def evaluate(self, method: str, keep: list[str], tag: str) -> dict:
        """One candidate through lgms-edge: mean and min IoU vs f32 on the held-out frames."""
        path = self.build(method, keep, tag)
        out = os.path.join(self.work, tag)
        rep = lgms_edge_masks(path, self.frames.held_dir, out)
        self.evals += 1
        ious = [
            iou(read_mask(os.path.join(out, "masks", f"{n}.png")), ref)
            for n, ref in zip(self.frames.held_names, self.frames.f32_masks, strict=True)
        ]
        shutil.rmtree(out, ignore_errors=True)
        r = {
            "method": method,
            "kept_f32": list(keep),
            "mean_iou": float(np.mean(ious)),
            "min_iou": float(np.min(ious)),
            "ms": rep["mean_infer_ms"],
            "tag": tag,
        }
        if self.verbose:
            iou_s = f"mean IoU {r['mean_iou']:.4f}"
            print(f"  {tag:<24} {method:<10} kept f32 {len(keep):>2}  {iou_s}  {r['ms']:.0f} ms")
        return r


def ort_agreement(f32_model: str, int8_model: str, frames: Frames) -> dict:
    """ONNX Runtime's view of the same model, for comparison: its int8 masks
    against lgms-edge's f32 masks and against its own f32 masks."""
    vs_edge, vs_ort = [], []
    for x, ref in zip(frames.held, frames.f32_masks, strict=True):
        q = ort_run(int8_model, x)[0, 0] > 0
        vs_edge.append(iou(q, ref))
        vs_ort.append(iou(q, ort_run(f32_model, x)[0, 0] > 0))
    return {"vs_lgms_edge_f32": float(np.mean(vs_edge)), "vs_ort_f32": float(np.mean(vs_ort))}


def keep_schedule(n: int) -> list[int]:
    """How many of the ``n`` quantisable convs to keep f32 (the most
    sensitive first), in the order tried: one at a time at first, then in
    growing steps up to all but one (all of them is the f32 model)."""
    ks, k = [], 1
    while k < n - 1:
        ks.append(k)
        k = k + 1 if k < 4 else k + k // 2
    return [*ks, n - 1] if n > 1 else []


def search(s: Search, gate: float, methods: list[str]) -> tuple[dict, list[dict], list[dict]]:
    """Best candidate, the trade-off curve, and the per-layer sensitivities.

    Methods first, in order: the first that reaches the gate is kept (MinMax
    first: its ranges clip nothing, so every int8 runtime rounds the same
    values; narrower ranges can put runtimes apart). Below the gate, the
    sensitivity of each conv ("all but one") with the best method, then the most sensitive convs kept f32 in
    growing numbers (``keep_schedule``), the last step refined by bisection.
    The evaluations left for the keep-f32 steps are set aside before the
    sensitivity scan, so a small ``--max-evals`` still tries mixed precision.
    """
    curve: list[dict] = []
    tried = []
    for m in methods:
        if not s.budget_left():
            break
        tried.append(s.evaluate(m, [], f"all-int8-{m}"))
        curve.append(tried[-1])
        if tried[-1]["mean_iou"] >= gate:
            return tried[-1], curve, []
    best = max(tried, key=lambda r: r["mean_iou"])
    method, base = best["method"], best["mean_iou"]
    schedule = keep_schedule(len(s.convs))
    left = s.max_evals - s.evals
    scan = min(len(s.convs), left - min(len(schedule) + 3, left // 2))
    print(f"  below the gate {gate}: sensitivity of {scan} of {len(s.convs)} convs ({method}, all but one)")
    sens = []
    for i, conv in enumerate(s.convs[: max(scan, 0)]):
        r = s.evaluate(method, [conv], f"keep-{i:02d}")
        sens.append({"layer": conv, "mean_iou_when_kept_f32": r["mean_iou"], "gain": r["mean_iou"] - base})
    ranked = [x["layer"] for x in sorted(sens, key=lambda x: -x["gain"])]
    # Convs not scanned (budget) come after the measured ones, in graph order.
    ranked += [c for c in s.convs if c not in ranked]
    by_k: dict[int, dict] = {}

    def try_keep(k: int) -> dict:
        r = s.evaluate(method, ranked[:k], f"mixed-{k:02d}")
        by_k[k] = r
        curve.append(r)
        return r

    passed_k, failed_k = None, 0
    for k in schedule:
        if not s.budget_left():
            break
        if try_keep(k)["mean_iou"] >= gate:
            passed_k = k
            break
        failed_k = k
    while passed_k is not None and passed_k - failed_k > 1 and s.budget_left():
        mid = (passed_k + failed_k) // 2
        if try_keep(mid)["mean_iou"] >= gate:
            passed_k = mid
        else:
            failed_k = mid
    if passed_k is not None:
        best = by_k[passed_k]
    elif by_k:
        best = max([best, *by_k.values()], key=lambda r: r["mean_iou"])
    curve.sort(key=lambda r: (len(r["kept_f32"]), r["method"]))
    return best, curve, sorted(sens, key=lambda x: -x["gain"])


def record(precision: str, passed: bool, best: dict, gate: float, frames: Frames, measured_with: str) -> dict:
    p = f"lgms.gate.{precision}."
    return {
        p + "passed": "true" if passed else "false",
        p + "agreement_mean_iou": f"{best['mean_iou']:.6f}",
        p + "min_iou": f"{best['min_iou']:.6f}",
        p + "gate": repr(gate),
        p + "held_out_frames": str(len(frames.held_names)),
        p + "held_out_source": f"{frames.desc} (frames {frames.held_names[0]}..{frames.held_names[-1]})",
        p + "held_out_sha256": frames.sha256,
        p + "kept_f32": ",".join(best.get("kept_f32", [])),
        p + "measured_with": measured_with,
    }


def print_curve(curve: list[dict], f32_ms: float) -> None:
    print(f"\n{'kept f32':>8}  {'method':<10}  {'mean IoU':>8}  {'min IoU':>7}  {'ms':>6}  layers kept f32")
    for r in curve:
        kept = ", ".join(r["kept_f32"]) or "-"
        n, iou_s = len(r["kept_f32"]), f"{r['mean_iou']:>8.4f}  {r['min_iou']:>7.4f}"
        print(f"{n:>8}  {r['method']:<10}  {iou_s}  {r['ms']:>6.0f}  {kept}")
    print(f"{'all':>8}  {'f32':<10}  {1.0:>8.4f}  {1.0:>7.4f}  {f32_ms:>6.0f}  (the f32 model)")


def run_int8(a, frames: Frames, work: str) -> int:
    s = Search(a.model, frames, work, a.max_evals)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise GateError(f"--methods {a.methods!r}: expected a comma-separated subset of {', '.join(METHODS)}")
    best, curve, sens = search(s, a.gate, methods)
    passed = best["mean_iou"] >= a.gate
    print_curve(curve, frames.f32_ms)
    measured = (
        f"lgms-edge masks (tract + lgms-edge int8 conv) vs lgms-edge f32 masks; "
        f"onnxruntime static QOperator, per-channel 7-bit weights, u8 activations, "
        f"{best['method']} calibration on {len(frames.calib)} frames, {s.evals} candidates"
    )
    md = record("int8", passed, best, a.gate, frames, measured)
    final = s.build(best["method"], best["kept_f32"], "final", md)
    ort = ort_agreement(a.model, final, frames)
    md["lgms.gate.int8.ort_agreement_mean_iou"] = f"{ort['vs_ort_f32']:.6f}"
    m = onnx.load(final)
    set_metadata(m, md)
    report = {
        "model": a.model,
        "out": a.out,
        "precision": "int8",
        "gate": a.gate,
        "passed": passed,
        "agreement_mean_iou": best["mean_iou"],
        "agreement_min_iou": best["min_iou"],
        "ort_agreement_mean_iou": ort,
        "best": best,
        "f32_ms": frames.f32_ms,
        "held_out": {"frames": frames.held_names, "source": frames.desc, "sha256": frames.sha256},
        "calibration_frames": frames.calib_names,
        "evaluations": s.evals,
        "curve": curve,
        "sensitivity": sens,
    }
    print(
        f"\nint8 vs f32 mask agreement on {len(frames.held_names)} held-out frames: "
        f"lgms-edge {best['mean_iou']:.4f} (min {best['min_iou']:.4f}), onnxruntime {ort['vs_ort_f32']:.4f}; "
        f"gate {a.gate}; {len(best['kept_f32'])} convs kept f32; "
        f"{best['ms']:.0f} ms vs f32 {frames.f32_ms:.0f} ms per inference"
    )
    return finish(a, report, passed, lambda: onnx.save(m, a.out), sens)


def run_f16(a, frames: Frames, work: str) -> int:
    out = os.path.join(work, "f16")
    rep = lgms_edge_masks(a.model, frames.held_dir, out, f16=True)
    ious = [
        iou(read_mask(os.path.join(out, "masks", f"{n}.png")), ref)
        for n, ref in zip(frames.held_names, frames.f32_masks, strict=True)
    ]
    best = {
        "mean_iou": float(np.mean(ious)),
        "min_iou": float(np.min(ious)),
        "kept_f32": [],
        "ms": rep["mean_infer_ms"],
    }
    passed = best["mean_iou"] >= a.gate
    how = (
        f"lgms-edge masks --f16 (tract's f16 conversion) vs lgms-edge f32 masks on {platform.machine()} "
        "(f16 arithmetic differs between CPUs: measure on the board's CPU)"
    )
    md = record("f16", passed, best, a.gate, frames, how)
    report = {"model": a.model, "precision": "f16", "gate": a.gate, "passed": passed, **best}
    report["f32_ms"] = frames.f32_ms
    print(f"f16 vs f32 mask agreement on {len(ious)} held-out frames: {best['mean_iou']:.4f} (gate {a.gate})")

    def write():
        m = onnx.load(a.model)
        set_metadata(m, md)
        onnx.save(m, a.model)

    return finish(a, report, passed, write, [])


def finish(a, report: dict, passed: bool, write, sens: list[dict]) -> int:
    if a.report:
        os.makedirs(os.path.dirname(os.path.abspath(a.report)), exist_ok=True)
        with open(a.report, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"report: {a.report}")
    target = a.out if report["precision"] == "int8" else f"{a.model} (lgms.gate.f16.* metadata)"
    if passed:
        write()
        print(f"PASSED: wrote {target}")
        return 0
    worst = ", ".join(f"{x['layer']} (+{x['gain']:.3f})" for x in sens[:5]) or "not measured"
    msg = (
        f"FAILED: mean mask IoU vs f32 {report.get('agreement_mean_iou', report.get('mean_iou')):.4f} "
        f"< gate {a.gate}; most sensitive layers: {worst}"
    )
    if a.force:
        write()
        print(f"{msg}; --force: wrote {target}, recorded as failing (lgms-edge run refuses it)")
        return 0
    print(f"{msg}; no model written (--force writes one recorded as failing)", file=sys.stderr)
    if report["precision"] == "int8" and os.path.exists(a.out):
        print(f"note: {a.out} exists from before and is left as it is; `lgms-edge info` shows its own record")
    return 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="the f32 ONNX model (lgms_models.export)")
    ap.add_argument("--out", help="the int8 model to write (int8 only)")
    ap.add_argument("--calib", required=True, help="frames: picture folder, .y4m file or lgms-edge recording")
    ap.add_argument("--calib-desc", help="how the frames were made, for the record (default: --calib)")
    ap.add_argument("--precision", choices=("int8", "f16"), default="int8")
    ap.add_argument("--gate", type=float, default=DEFAULT_GATE, help="mean mask IoU vs f32 to reach")
    ap.add_argument("--frames", type=int, default=24, help="frames read from --calib (the first ones)")
    ap.add_argument("--step", type=int, default=1, help="take one frame in STEP (sample a long recording)")
    ap.add_argument("--held-out", type=float, default=0.25, help="fraction held out (the last frames)")
    ap.add_argument("--methods", default="minmax,percentile,entropy", help="calibration methods to try")
    ap.add_argument("--max-evals", type=int, default=60, help="at most this many lgms-edge evaluations")
    ap.add_argument("--report", help="write the report (curve, sensitivities) as JSON here")
    ap.add_argument("--force", action="store_true", help="write it below the gate too (recorded failing)")
    a = ap.parse_args(argv)
    if a.precision == "int8" and not a.out:
        ap.error("--out is required for int8")
    if not 0 < a.gate <= 1:
        ap.error(f"--gate {a.gate}: expected 0 < gate <= 1")
    if not 0 < a.held_out < 1:
        ap.error(f"--held-out {a.held_out}: expected a fraction between 0 and 1")
    with tempfile.TemporaryDirectory(prefix="lgms-gate-") as work:
        frames = Frames(a.model, a.calib, work, a.frames, a.held_out, a.calib_desc, a.step)
        print(
            f"{len(frames.calib_names) + len(frames.held_names)} frames of {a.calib}: "
            f"{len(frames.calib_names)} calibrate, {len(frames.held_names)} held out "
            f"(sha256 {frames.sha256[:12]})"
        )
        return run_int8(a, frames, work) if a.precision == "int8" else run_f16(a, frames, work)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

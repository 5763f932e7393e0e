"""Static int8 quantisation of an exported LGMSNet for tract 0.23.9.

This module quantises without judging the result; ``lgms_models.gate``
(``make model-int8``) uses it to write int8 models with the accuracy record
that ``lgms-edge run`` requires, measured on the user's own frames.

    python3 -m lgms_models.quantize --model models/lgmsnet.f32.onnx --out models/lgmsnet.int8.onnx \
        [--calib DIR] [--frames 32] [--per-channel]

Constraints come from what tract runs as true integer kernels:

* QOperator format, so the int8 compute is explicit: ``QLinearConv`` and
  ``QLinearMatMul`` with ``QuantizeLinear``/``DequantizeLinear`` around them.
  (QDQ format would leave it to the runtime to pattern-match DQ->op->Q.)
* Only ``Conv`` (and, with ``--ops conv+matmul``, ``MatMul``) is quantised.
  Any other op type makes onnxruntime emit Microsoft contrib ops (QLinearAdd,
  QLinearSigmoid, QLinearConcat, ...) in the ``com.microsoft`` domain, which
  tract does not implement; we assert none appear.
* The default recipe (``--ops conv``) quantises the dense convs and the
  grouped ones with 4k channels per group (the decoder's groups-2 convs)
  only, which is what lgms-edge runs with its own int8 kernel
  (``src/infer/ops/qconv/``: each ``QuantizeLinear -> QLinearConv ->
  DequantizeLinear`` becomes one fused operator). Depthwise convs (and the
  encoders' narrow grouped convs) stay f32 (tract's f32 depthwise kernel is
  already fast, and there is little arithmetic in them), and the attention
  MatMuls stay f32 so lgms-edge's fused attention applies (quantised, tract
  runs them as eight separate integer/float passes: about 350 ms on an
  AVX-512 Xeon, most of the int8 inference).
* Weights are 7-bit by default (``reduce_range``, range -64..63): with u8
  activations, two products ``u8 * w`` then fit one i16 lane, so the AVX2
  kernel can use ``vpmaddubsw`` without saturating (the reason onnxruntime
  offers the option). Per-channel weight scales win back the lost bit.
* Everything else (norms, GELU/SiLU, softmax, resize) stays f32.

Calibration uses preprocessed frames: the pictures of ``--calib DIR`` (a
folder of pictures, or one with ``images/``, e.g. ``lgms-edge phantom``
output) if given, else frames from the ``lgms-edge phantom`` binary
(``phantom.py``). The same preprocessing as training/export is used, so
activation ranges match what the runtime will feed. The int8-vs-f32 report
runs on held-out frames: the pictures after the calibration ones, or
phantom frames of another seed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantType,
    create_calibrator,
)
from onnxruntime.quantization.calibrate import TensorsData
from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
from onnxruntime.quantization.quant_utils import QuantizationMode, load_model_with_shape_infer

from lgms_models import phantom, preprocess
from lgms_models.export import INPUT_NAME, get_metadata, ort_run, set_metadata

RECIPES = {"conv": ("Conv",), "conv+matmul": ("Conv", "MatMul")}
# Op types a quantised model may contain: the f32 model's own plus these.
INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"}
FORBIDDEN_DOMAINS = {"com.microsoft"}
# Phantom seeds without --calib: calibration, and the held-out frames of the report.
CALIB_SEED = 1000
EVAL_SEED = 5000


def calibration_frames(calib: str | None, n: int, seed: int = CALIB_SEED, skip: int = 0) -> list[np.ndarray]:
    """Network inputs (1x3x256x256): up to ``n`` pictures of ``calib`` (a
    folder of pictures, or one with ``images/``) in name order from the
    ``skip``-th on, else ``n`` ``lgms-edge phantom`` frames of ``seed``."""
    if calib:
        root = os.path.join(calib, "images") if os.path.isdir(os.path.join(calib, "images")) else calib
        paths = sorted(
            p for ext in ("png", "jpg", "jpeg", "bmp") for p in glob.glob(os.path.join(root, f"*.{ext}"))
        )
        if not paths:
            raise SystemExit(f"no images under {root}")
        return [preprocess.preprocess_path(p) for p in paths[skip : skip + n]]
    return phantom.inputs(n, seed) if n > 0 else []


class FrameReader(CalibrationDataReader):
    def __init__(self, frames: list[np.ndarray]):
        self._it = iter(frames)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {INPUT_NAME: x}


def check_int8_ops(model: onnx.ModelProto, float_ops: set[str] | None = None) -> dict[str, int]:
    """Raise if the model uses contrib ops or unexpected quantised ops; return op counts."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain in FORBIDDEN_DOMAINS:
            raise ValueError(f"{node.name}: op {node.domain}::{node.op_type} is not supported by tract")
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    allowed = INT8_OPS | (float_ops if float_ops is not None else set(counts))
    bad = sorted(set(counts) - allowed)
    if bad:
        raise ValueError(f"unexpected op types after quantisation: {bad}")
    q = [op for op in counts if op.startswith("QLinear")]
    if not q:
        raise ValueError("no QLinear op: nothing was quantised")
    return counts


def averaging_matmuls(model: onnx.ModelProto) -> list[str]:
    """The MatMuls that compute GroupNorm mean/variance (``GroupNormExport``,
    module path ``*.norm_act.0``). Quantising them would put the
    normalisation statistics through int8, so they stay f32."""
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and "/norm_act/norm_act.0/" in n.name]


def depthwise_convs(model: onnx.ModelProto) -> list[str]:
    """Convs with fewer than 4 input channels per group (depthwise and the
    narrow grouped ones): left f32. lgms-edge's int8 kernel takes groups of
    multiples of 4 channels (the decoder's groups-2 convs)."""
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type == "Conv" and group > 1:
            w = inits.get(n.input[1])
            if w is None or w.dims[1] % 4 != 0 or (w.dims[0] // group) % 4 != 0:
                out.append(n.name)
    return out


def calibrate(
    model_path: str, frames: list[np.ndarray], method: CalibrationMethod, ops: str = "conv"
) -> TensorsData:
    """The activation ranges of ``method`` on ``frames``: computed once and
    reused by every recipe :func:`quantize` builds from them (the mixed
    precision search quantises the same model many times)."""
    with tempfile.TemporaryDirectory(prefix="lgms-calib-") as tmp:
        calibrator = create_calibrator(
            Path(model_path),
            list(RECIPES[ops]),
            augmented_model_path=os.path.join(tmp, "augmented.onnx"),
            calibrate_method=method,
        )
        calibrator.collect_data(FrameReader(frames))
        ranges = calibrator.compute_data()
        del calibrator
    return ranges


def quantizable_convs(model: onnx.ModelProto, ops: str = "conv") -> list[str]:
    """The Conv nodes the recipe quantises (dense and groups-of-4k convs)."""
    skip = set(depthwise_convs(model)) if ops == "conv" else set()
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.name not in skip]


def quantize(
    model_path: str,
    out_path: str,
    frames: list[np.ndarray] | None,
    per_channel: bool,
    activation_type: QuantType = QuantType.QUInt8,
    weight_type: QuantType = QuantType.QInt8,
    method: CalibrationMethod = CalibrationMethod.MinMax,
    calib_desc: str = "",
    ops: str = "conv",
    reduce_range: bool = True,
    ranges: TensorsData | None = None,
    keep_f32: list[str] | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> dict:
    """Quantises ``model_path`` into ``out_path``: calibrated on ``frames``,
    or with the ``ranges`` of an earlier :func:`calibrate`; the convs named in
    ``keep_f32`` stay f32 (mixed precision)."""
    src = onnx.load(model_path)
    exclude = averaging_matmuls(src) + (depthwise_convs(src) if ops == "conv" else []) + list(keep_f32 or [])
    float_ops = {n.op_type for n in src.graph.node}
    md = get_metadata(src)
    if ranges is None:
        ranges = calibrate(model_path, frames or [], method, ops)
    quantizer = ONNXQuantizer(
        load_model_with_shape_infer(Path(model_path)),
        per_channel,
        reduce_range,
        QuantizationMode.QLinearOps,
        True,  # static
        weight_type,
        activation_type,
        ranges,
        [],
        exclude,
        list(RECIPES[ops]),
        {},
    )
    quantizer.quantize_model()
    q = quantizer.model.model
    counts = check_int8_ops(q, float_ops)
    # ORT may declare the contrib domain even when no node uses it; drop it so
    # the file advertises only standard ONNX.
    keep = [o for o in q.opset_import if o.domain not in FORBIDDEN_DOMAINS]
    del q.opset_import[:]
    q.opset_import.extend(keep)
    md.update(
        {
            "lgms.precision": "int8",
            "lgms.quantization": (
                f"onnxruntime static QOperator, "
                f"{'Conv (not depthwise)' if ops == 'conv' else 'Conv+MatMul'} only, "
                f"{'per-channel' if per_channel else 'per-tensor'} weights "
                f"{weight_type.name}{' 7-bit' if reduce_range else ''}, "
                f"activations {activation_type.name}, "
                f"{method.name} calibration on {calib_desc or f'{len(frames or [])} frames'}"
                + (f", {len(keep_f32)} convs kept f32" if keep_f32 else "")
            ),
        }
    )
    md.update(extra_metadata or {})
    set_metadata(q, md)
    onnx.checker.check_model(q)
    onnx.save(q, out_path)
    return counts


def compare(f32_path: str, int8_path: str, frames: list[np.ndarray]) -> dict[str, float]:
    """int8 vs f32 (both in onnxruntime): worst logit error and mean mask IoU."""
    worst, ious = 0.0, []
    for x in frames:
        a, b = ort_run(f32_path, x), ort_run(int8_path, x)
        worst = max(worst, float(np.abs(a - b).max()))
        pa, pb = a > 0, b > 0
        ious.append((np.logical_and(pa, pb).sum() + 1e-5) / (np.logical_or(pa, pb).sum() + 1e-5))
    return {
        "max_abs_logit_diff": worst,
        "mask_iou_vs_f32_mean": float(np.mean(ious)),
        "mask_iou_vs_f32_min": float(np.min(ious)),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="static int8 quantisation for tract")
    ap.add_argument("--model", required=True, help="f32 ONNX from lgms_models.export")
    ap.add_argument("--out", required=True)
    ap.add_argument("--calib", help="folder of calibration pictures (or with images/)")
    ap.add_argument("--frames", type=int, default=32, help="number of calibration frames")
    ap.add_argument("--per-channel", action="store_true", help="per-output-channel weight scales")
    ap.add_argument(
        "--ops",
        choices=sorted(RECIPES),
        default="conv",
        help="conv: dense convs only (lgms-edge's int8 kernel); conv+matmul: the MatMuls too",
    )
    ap.add_argument(
        "--full-range", action="store_true", help="8-bit weights (default 7-bit, see the module doc)"
    )
    ap.add_argument("--activations", choices=("u8", "s8"), default="u8")
    ap.add_argument("--method", choices=("minmax", "percentile", "entropy"), default="minmax")
    ap.add_argument(
        "--eval-frames",
        type=int,
        default=4,
        help="held-out frames for the int8-vs-f32 report: the pictures after the calibration ones "
        "with --calib, else phantom frames of another seed; 0: no report",
    )
    a = ap.parse_args(argv)
    frames = calibration_frames(a.calib, a.frames)
    act = QuantType.QUInt8 if a.activations == "u8" else QuantType.QInt8
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[a.method]
    if a.calib:
        desc = f"{len(frames)} frames from {a.calib}"
    else:
        desc = f"{len(frames)} lgms-edge phantom frames (seed {CALIB_SEED})"
    counts = quantize(
        a.model,
        a.out,
        frames,
        a.per_channel,
        act,
        QuantType.QInt8,
        method,
        desc,
        ops=a.ops,
        reduce_range=not a.full_range,
    )
    held_out = calibration_frames(a.calib, a.eval_frames, seed=EVAL_SEED, skip=a.frames)
    report = {
        "out": a.out,
        "op_counts": counts,
        "eval_frames": len(held_out),
        "vs_f32": compare(a.model, a.out, held_out) if held_out else None,
        "size_bytes": os.path.getsize(a.out),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])

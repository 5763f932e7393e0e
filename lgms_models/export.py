"""Export LGMSNet to ONNX for the tract runtime.

    python3 -m lgms_models.export --ckpt best.pth --out models/lgmsnet.f32.onnx --name lgmsnet-phantom-us
    python3 -m lgms_models.export --random-seed 0 --out models/lgmsnet-random.f32.onnx --name lgmsnet-random

What this does and why:

* BatchNorm folding. tract folds BN into regular convolutions itself but not
  after depthwise ones, and some BNs here follow a GELU (decoder fusion
  blocks), where no runtime can fold them into the *preceding* conv. We fold
  every conv->BN pair into the conv, and every BN->1x1 conv pair into the
  following conv (exact, since a 1x1 conv without padding is affine per
  pixel). Only the two BNs that feed a padded 3x3 conv stay as BN nodes.
* Exact GELU. The legacy TorchScript exporter writes GELU at opset 17 as
  ``Mul(Mul(x, Add(Erf(Div(x, sqrt2)), 1)), 0.5)``; tract 0.23 rewrites
  Div-by-const into Mul-by-reciprocal and then fuses that chain into its
  GeluExact op (``detect_gelu_exact``). We keep the legacy exporter
  (``dynamo=False``) so this pattern is what comes out.
* Fixed shapes (1x3x256x256 -> 1x1x256x256), no dynamic axes: lets tract
  optimise the whole graph ahead of time, and constant folding removes the
  shape arithmetic around Resize/Reshape.
* Preprocessing and provenance go into ``metadata_props`` so the runtime reads
  them instead of hard-coding them (keys in ``preprocess.PREPROCESS``).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import hashlib
import json
import os
import sys
import tempfile
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn

from lgms_models import phantom, preprocess
from lgms_models.lgmsnet import (
    GroupNormExport,
    MKtinyvit4_CT,
    SpiltConv,
    build_model,
    count_params,
    load_checkpoint,
)

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
INPUT_SHAPE = (1, 3, preprocess.INPUT_SIZE, preprocess.INPUT_SIZE)

# Keys the Rust runtime requires in metadata_props (or the sidecar JSON).
REQUIRED_METADATA = (
    "lgms.name",
    "lgms.precision",
    "lgms.channel_order",
    "lgms.mean",
    "lgms.std",
    "lgms.max_pixel_value",
    "lgms.extra_scale",
    "lgms.resize",
    "lgms.threshold",
    "lgms.checkpoint_sha256",
    "lgms.training_data",
    "lgms.export_date",
    "lgms.exporter",
)


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------


def calibration_batch(n: int = 4, seed: int = 1234) -> torch.Tensor:
    """Preprocessed phantom frames (``lgms-edge phantom``): inputs with the
    statistics of real ones.

    Real preprocessed inputs are tiny (about +-0.01 after the second /255), so
    BN statistics must come from such inputs for a random model to produce
    non-degenerate logits.
    """
    return torch.from_numpy(np.concatenate(phantom.inputs(n, seed), axis=0))


@torch.no_grad()
def random_init(model: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights whose BN running stats are realistic.

    PyTorch's default init plus BN stats of (0, 1) would make every logit
    nearly equal for real inputs. Instead: randomise the affine parameters of
    the norms a little, then run a few preprocessed frames through the model in
    train mode with a cumulative moving average, so each BN's running
    mean/var are the actual statistics of its input.
    """
    torch.manual_seed(seed)
    fresh = build_model()
    model.load_state_dict(fresh.state_dict())
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            m.weight.copy_(0.8 + 0.4 * torch.rand(m.weight.shape, generator=g))
            m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=g))
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration passes
    model.train()
    batch = calibration_batch()
    for i in range(2):
        model(batch[2 * i : 2 * i + 2])
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    model.eval()
    # Calibrated random nets produce heavy-tailed logits (|z| up to ~10); f32
    # error grows with the logit scale, so shrink the head to a logit std of
    # 0.25. A positive rescale of the last conv leaves every mask unchanged.
    z = model(batch)
    k = 0.25 / float(z.std())
    model.Conv_1x1.weight.mul_(k)
    model.Conv_1x1.bias.mul_(k)
    return model


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# BatchNorm folding
# ---------------------------------------------------------------------------


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """BN in eval mode as y = s*x + t (float64 to keep folding error negligible)."""
    s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    t = bn.bias.double() - bn.running_mean.double() * s
    return s, t


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """conv -> BN  ==>  conv' (BN scales output channels)."""
    s, t = _bn_affine(bn)
    w = conv.weight.double() * s.view(-1, 1, 1, 1)
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(s)
    conv.weight.copy_(w.float())
    conv.bias = nn.Parameter((b * s + t).float())


@torch.no_grad()
def fold_bn_conv(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> None:
    """BN -> 1x1 conv  ==>  conv' (BN scales input channels).

    Only exact when the conv is 1x1, unpadded and ungrouped: a padded conv
    would see the BN shift t at the zero-padded border where BN never ran.
    """
    assert conv.kernel_size == (1, 1) and conv.padding == (0, 0) and conv.groups == 1
    s, t = _bn_affine(bn)
    w = conv.weight.double()
    b = conv.bias.double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    conv.bias = nn.Parameter((b + (w[:, :, 0, 0] * t.view(1, -1)).sum(1)).float())
    conv.weight.copy_((w * s.view(1, -1, 1, 1)).float())


def _foldable_into_next(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.padding == (0, 0) and m.groups == 1


def fold_batchnorms(model: MKtinyvit4_CT) -> tuple[MKtinyvit4_CT, int, int]:
    """Return an eval-mode copy with BNs folded; also (#folded, #left)."""
    model = copy.deepcopy(model).eval()
    folded = 0
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            # conv -> BN first, so a BN is never folded twice.
            for i in range(len(mod) - 1):
                if isinstance(mod[i], nn.Conv2d) and isinstance(mod[i + 1], nn.BatchNorm2d):
                    fold_conv_bn(mod[i], mod[i + 1])
                    mod[i + 1] = nn.Identity()
                    folded += 1
            for i in range(len(mod) - 1):
                if isinstance(mod[i], nn.BatchNorm2d) and _foldable_into_next(mod[i + 1]):
                    fold_bn_conv(mod[i], mod[i + 1])
                    mod[i] = nn.Identity()
                    folded += 1
        elif isinstance(mod, SpiltConv):
            fold_conv_bn(mod.dwconv3x3, mod.bn1)
            fold_conv_bn(mod.dwconv1x1, mod.bn2)
            mod.bn1 = nn.Identity()
            mod.bn2 = nn.Identity()
            folded += 2
    # The last decoder BN feeds the 1x1 head directly (across module boundaries).
    last = model.Up_conv2.conv
    if isinstance(last[8], nn.BatchNorm2d):
        fold_bn_conv(last[8], model.Conv_1x1)
        last[8] = nn.Identity()
        folded += 1
    left = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    return model, folded, left


def prepare_for_export(model: MKtinyvit4_CT) -> tuple[MKtinyvit4_CT, int, int]:
    """Eval-mode copy with BNs folded and GroupNorms in their export form."""
    model, folded, left = fold_batchnorms(model)
    for mod in model.modules():
        for name, child in mod.named_children():
            if type(child) is nn.GroupNorm:
                setattr(mod, name, GroupNormExport.from_group_norm(child))
    return model, folded, left


# ---------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------


def exporter_string() -> str:
    return f"torch {torch.__version__}, torch.onnx legacy TorchScript exporter (dynamo=False), opset {OPSET}"


def build_metadata(
    name: str, precision: str, checkpoint_sha256: str, training_data: str, exporter: str | None = None
) -> dict[str, str]:
    md = {"lgms.name": name, "lgms.precision": precision}
    md.update(preprocess.PREPROCESS)
    md.update(
        {
            "lgms.checkpoint_sha256": checkpoint_sha256,
            "lgms.training_data": training_data,
            "lgms.export_date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lgms.exporter": exporter or exporter_string(),
        }
    )
    return md


def set_metadata(model: onnx.ModelProto, md: dict[str, str]) -> None:
    """Replace lgms.* metadata_props (others are kept)."""
    keep = [p for p in model.metadata_props if p.key not in md]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in md.items():
        model.metadata_props.add(key=k, value=str(v))


def get_metadata(path_or_model) -> dict[str, str]:
    if isinstance(path_or_model, str):
        m = onnx.load(path_or_model, load_external_data=False)
    else:
        m = path_or_model
    return {p.key: p.value for p in m.metadata_props}


def write_sidecar(onnx_path: str, md: dict[str, str]) -> str:
    """Same keys as a flat JSON object next to the model (``X.onnx`` -> ``X.json``)."""
    path = os.path.splitext(onnx_path)[0] + ".json"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(md, f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def export_onnx(model: nn.Module, out_path: str, metadata: dict[str, str]) -> onnx.ModelProto:
    """Legacy-exporter ONNX with fixed shapes, then metadata; returns the proto."""
    model = model.eval()
    dummy = torch.zeros(INPUT_SHAPE)
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.onnx")
        with warnings.catch_warnings():
            # The legacy exporter is deprecated but is the one whose GELU and
            # Resize output tract is known to handle; silence the notice.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (dummy,),
                raw,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                do_constant_folding=True,
                export_params=True,
            )
        proto = onnx.load(raw)
    onnx.checker.check_model(proto)
    proto = onnx.shape_inference.infer_shapes(proto)
    proto.doc_string = "LGMSNet (Dong et al., ECAI 2025), BN folded; see lgms.* metadata"
    set_metadata(proto, metadata)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    onnx.save(proto, out_path)
    return proto


def ort_run(onnx_path: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    return sess.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})[0]


@torch.no_grad()
def torch_run(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return model.eval()(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


@torch.no_grad()
def reference_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Logits of the *unfolded* model computed in float64, rounded to f32.

    Why not plain f32 PyTorch: with the authors' double /255 the stem sees
    inputs of about +-0.01, so the stem BN divides by a tiny running std
    (scale ~100-400) right after adding a conv bias that is large compared with
    the signal. In f32 the unfolded ``conv + bias - running_mean`` cancels
    catastrophically and the logits move by ~1e-2, far more than any runtime
    difference we want to detect; a folded f32 graph (what ORT and tract run)
    does not have this cancellation. Float64 gives the exact function both
    should approximate.
    """
    m64 = copy.deepcopy(model).eval().double()
    out = m64(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)))
    return out.float().numpy()


def check_inputs(seed: int = 0, images: list[str] | None = None) -> list[np.ndarray]:
    """The export gate's inputs: the given pictures (else one ``lgms-edge
    phantom`` frame) and one random input of realistic scale."""
    frames = [preprocess.preprocess_path(p) for p in images] if images else phantom.inputs(1, seed + 99)
    rng = np.random.default_rng(seed)
    return [*frames, (rng.standard_normal(INPUT_SHAPE) / 255).astype(np.float32)]


# The export gate's relative tolerance: max |diff| <= RTOL * max(1, max |ref|).
# f32 rounding grows with the logits' magnitude (a checkpoint whose logits
# reach 13 differs from the float64 reference by ~1e-4 through ordinary
# rounding), while a broken export (a wrong BatchNorm fold, a missing op)
# moves logits by a sizeable fraction of their scale.
RTOL = 5e-5


def logits_gate(
    refs: list[np.ndarray], gots: list[np.ndarray], rtol: float = RTOL, threshold: float = 0.0
) -> dict:
    """Scale-aware comparison of ``gots`` with the reference logits ``refs``.

    Passes when max |diff| <= rtol * max(1, max |ref|) over every input and
    no mask pixel differs where the reference logit is decisively (more than
    the tolerance) away from the threshold: a pixel whose logit sits on the
    threshold may flip through rounding alone.
    """
    absmax = max(float(np.abs(r).max()) for r in refs)
    tol = rtol * max(1.0, absmax)
    diff, flipped, decisive = 0.0, 0, 0
    for ref, got in zip(refs, gots, strict=True):
        diff = max(diff, float(np.abs(got - ref).max()))
        differ = (got > threshold) != (ref > threshold)
        flipped += int(differ.sum())
        decisive += int((differ & (np.abs(ref - threshold) > tol)).sum())
    return {
        "max_abs_diff": diff,
        "logit_absmax": absmax,
        "rtol": rtol,
        "tolerance": tol,
        "mask_pixels_differing": flipped,
        "mask_pixels_differing_decisively": decisive,
        "passed": diff <= tol and decisive == 0,
    }


def parity_report(
    onnx_path: str, model: nn.Module, folded: nn.Module, inputs: list[np.ndarray], rtol: float = RTOL
) -> dict:
    """The gate: ORT running the folded ONNX against the float64 reference of
    the unfolded model (``logits_gate``); plus, for context, the max |diff|
    of f32 PyTorch (folded and unfolded) against the same reference."""
    refs = [reference_logits(model, x) for x in inputs]
    gate = logits_gate(refs, [ort_run(onnx_path, x) for x in inputs], rtol)
    gate["compared"] = (
        f"onnxruntime on the exported ONNX vs the unfolded PyTorch model in float64, {len(inputs)} inputs"
    )
    gate["torch_f32_folded_vs_f64"] = max(
        float(np.abs(torch_run(folded, x) - r).max()) for x, r in zip(inputs, refs, strict=True)
    )
    gate["torch_f32_unfolded_vs_f64"] = max(
        float(np.abs(torch_run(model, x) - r).max()) for x, r in zip(inputs, refs, strict=True)
    )
    return gate


def gate_message(gate: dict) -> str:
    """One line: what was compared, the difference and the magnitude it is judged against."""
    return (
        f"max |diff| {gate['max_abs_diff']:.3g} vs tolerance {gate['tolerance']:.3g} "
        f"(= rtol {gate['rtol']:.1e} x max(1, max |logit| {gate['logit_absmax']:.3g})), "
        f"{gate['mask_pixels_differing_decisively']} mask pixels differ decisively "
        f"({gate['mask_pixels_differing']} in all); {gate['compared']}"
    )


def export_checkpoint(
    out: str,
    name: str,
    ckpt: str | None = None,
    seed: int | None = None,
    training_data: str | None = None,
    rtol: float = RTOL,
    sidecar: bool = False,
    verbose: bool = True,
    check_images: list[str] | None = None,
) -> dict:
    """Whole pipeline: weights -> folded ONNX with metadata -> ORT parity check."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = build_model()
    if ckpt:
        load_checkpoint(model, ckpt)
        ck_hash = sha256_file(ckpt)
        data = training_data or "unknown"
    else:
        assert seed is not None, "need --ckpt or --random-seed"
        random_init(model, seed)
        ck_hash = f"none (random init, seed {seed})"
        data = training_data or "none (random weights)"
    model.eval()
    folded, n_folded, n_left = prepare_for_export(model)
    md = build_metadata(name, "f32", ck_hash, data)
    export_onnx(folded, out, md)
    if sidecar:
        write_sidecar(out, md)
    parity = parity_report(out, model, folded, check_inputs(images=check_images), rtol)
    report = {
        "out": out,
        "params": count_params(model),
        "bn_folded": n_folded,
        "bn_left": n_left,
        "parity": parity,
        "metadata": md,
    }
    if verbose:
        print(json.dumps(report, indent=2))
    if not parity["passed"]:
        raise SystemExit(f"parity check failed: {gate_message(parity)}")
    if verbose:
        print(f"parity check passed: {gate_message(parity)}")
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="authors'-format state_dict (.pth)")
    src.add_argument("--random-seed", type=int, help="seeded random weights instead of a checkpoint")
    ap.add_argument("--out", required=True, help="output .onnx path")
    ap.add_argument("--name", help="lgms.name (default: derived from --out)")
    ap.add_argument("--training-data", help="lgms.training_data provenance string")
    ap.add_argument(
        "--rtol",
        type=float,
        default=RTOL,
        help="the gate: max |diff| <= RTOL * max(1, max |reference logit|); no decisive mask pixel differs",
    )
    ap.add_argument("--sidecar", action="store_true", help="also write X.json next to X.onnx")
    ap.add_argument(
        "--check-image",
        action="append",
        help="picture for the ONNX Runtime parity check (repeatable; default: an lgms-edge phantom frame)",
    )
    a = ap.parse_args(argv)
    name = a.name or os.path.basename(a.out).split(".")[0]
    export_checkpoint(
        a.out,
        name,
        ckpt=a.ckpt,
        seed=a.random_seed,
        training_data=a.training_data,
        rtol=a.rtol,
        sidecar=a.sidecar,
        check_images=a.check_image,
    )


if __name__ == "__main__":
    main(sys.argv[1:])

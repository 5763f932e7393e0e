"""Parity vectors: inputs and reference logits for checking a runtime against PyTorch.

    python3 -m lgms_models.parity --model models/lgmsnet-random.f32.onnx --random-seed 0
    python3 -m lgms_models.parity --model models/lgmsnet.f32.onnx --ckpt best.pth [--image a.png ...]

Writes ``models/parity/manifest.json`` and raw little-endian f32 files:
``<name>.input.f32`` (1x3x256x256, the network's input tensor, i.e. already
preprocessed) and ``<name>.logits.f32`` (1x1x256x256). The Rust side
(``lgms-edge parity``) runs the ONNX model on each input and compares.

The reference logits come from the *unfolded* PyTorch model evaluated in
float64 and rounded to f32 (see ``export.reference_logits`` for why f32
PyTorch is not precise enough to be the reference for this network).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

from lgms_models import phantom, preprocess
from lgms_models.export import (
    INPUT_SHAPE,
    RTOL,
    gate_message,
    logits_gate,
    ort_run,
    random_init,
    reference_logits,
)
from lgms_models.lgmsnet import build_model, load_checkpoint

DEFAULT_DIR = "models/parity"


def default_vectors(seed: int = 0, images: list[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """Named network inputs: the given pictures (else two ``lgms-edge phantom``
    frames) and random normal.

    The random input is N(0,1)/255: same scale as real preprocessed frames
    (the authors divide by 255 twice), so the network stays in the regime
    it is calibrated for.
    """
    vecs = []
    if images:
        for i, p in enumerate(images):
            vecs.append((f"image{i}", preprocess.preprocess_path(p)))
    else:
        for i, x in enumerate(phantom.inputs(2, seed + 7)):
            vecs.append((f"phantom{i}", x))
    rng = np.random.default_rng(seed)
    vecs.append(("normal", (rng.standard_normal(INPUT_SHAPE) / 255).astype(np.float32)))
    return vecs


def write_vectors(
    model_path: str,
    model: torch.nn.Module,
    vectors: list[tuple[str, np.ndarray]],
    out_dir: str = DEFAULT_DIR,
    rtol: float = RTOL,
    check_ort: bool = True,
) -> dict:
    """Writes the vectors and the manifest. The manifest's ``tolerance`` (the
    absolute max |diff| ``lgms-edge parity`` allows) scales with the
    reference logits: ``rtol * max(1, max |logit|)``, the export gate's rule."""
    os.makedirs(out_dir, exist_ok=True)
    # Start from a clean slate so stale vectors of another model never linger.
    for f in os.listdir(out_dir):
        if f.endswith(".f32"):
            os.remove(os.path.join(out_dir, f))
    entries, diffs, refs, gots = [], {}, [], []
    for name, x in vectors:
        assert x.shape == INPUT_SHAPE and x.dtype == np.float32, (name, x.shape, x.dtype)
        logits = reference_logits(model, x)
        x.astype("<f4").tofile(os.path.join(out_dir, f"{name}.input.f32"))
        logits.astype("<f4").tofile(os.path.join(out_dir, f"{name}.logits.f32"))
        entries.append({"name": name, "input": f"{name}.input.f32", "logits": f"{name}.logits.f32"})
        refs.append(logits)
        if check_ort:
            gots.append(ort_run(model_path, x))
            diffs[name] = float(np.abs(gots[-1] - logits).max())
    absmax = max(float(np.abs(r).max()) for r in refs)
    manifest = {
        "model": os.path.relpath(os.path.abspath(model_path), os.getcwd()),
        "tolerance": rtol * max(1.0, absmax),
        "rtol": rtol,
        "logit_absmax": absmax,
        "vectors": entries,
    }
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    gate = None
    if check_ort:
        gate = logits_gate(refs, gots, rtol)
        gate["compared"] = f"onnxruntime on {model_path} vs PyTorch in float64, {len(refs)} vectors"
    return {"manifest": manifest, "ort_max_abs_diff": diffs, "gate": gate}


def read_vector(path: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.fromfile(path, dtype="<f4").reshape(shape)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="write parity vectors for a bundled model")
    ap.add_argument("--model", required=True, help="ONNX path (relative to repo root)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt")
    src.add_argument("--random-seed", type=int)
    ap.add_argument("--image", action="append", help="use these image files as inputs (repeatable)")
    ap.add_argument("--out", default=DEFAULT_DIR)
    ap.add_argument(
        "--rtol", type=float, default=RTOL, help="max |diff| <= RTOL * max(1, max |reference logit|)"
    )
    a = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = build_model()
    if a.ckpt:
        load_checkpoint(model, a.ckpt)
    else:
        random_init(model, a.random_seed)
    model.eval()
    rep = write_vectors(a.model, model, default_vectors(0, a.image), a.out, a.rtol)
    print(json.dumps(rep, indent=2))
    if not rep["gate"]["passed"]:
        raise SystemExit(f"onnxruntime differs from the reference: {gate_message(rep['gate'])}")
    print(f"parity vectors written: {gate_message(rep['gate'])}")


if __name__ == "__main__":
    main(sys.argv[1:])

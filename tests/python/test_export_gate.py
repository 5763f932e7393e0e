"""The export gate: relative to the logits' magnitude, so that a valid
checkpoint with large logits exports and a broken export (a wrong
BatchNorm fold) fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgms_models import export
from lgms_models.lgmsnet import build_model

torch.set_num_threads(min(2, torch.get_num_threads()))


def test_gate_scales_with_the_logits():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    ref[0, 0, 0, 0] = 13.0
    got = ref + np.float32(1.16e-4)
    g = export.logits_gate([ref], [got])
    # 1.16e-4 on logits reaching 13 is f32 rounding: within 5e-5 * 13.
    assert g["passed"] and g["logit_absmax"] == pytest.approx(13.0)
    assert g["tolerance"] == pytest.approx(export.RTOL * 13.0)
    # The same difference on logits of magnitude 1 is not.
    small = ref / 13
    assert not export.logits_gate([small], [small + np.float32(1.16e-4)])["passed"]
    # A mask pixel flipped far from the threshold is counted (and fails).
    flipped = ref.copy()
    i = np.unravel_index(np.argmax(ref), ref.shape)
    flipped[i] = -flipped[i]
    g = export.logits_gate([ref], [flipped], rtol=0.01)
    assert g["mask_pixels_differing_decisively"] == 1 and not g["passed"]


@pytest.fixture(scope="module")
def large_logit_checkpoint(tmp_path_factory):
    """A valid checkpoint whose logits reach well beyond 1 (the head scaled up:
    every mask is unchanged, f32 rounding grows with the scale)."""
    m = export.random_init(build_model(), seed=3)
    with torch.no_grad():
        m.Conv_1x1.weight.mul_(4.5)
        m.Conv_1x1.bias.mul_(4.5)
    path = tmp_path_factory.mktemp("ckpt") / "large.pth"
    torch.save(m.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def large_logit_export(large_logit_checkpoint, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("onnx") / "large.f32.onnx")
    # No SystemExit: the command exits 0.
    return out, export.export_checkpoint(out, "large", ckpt=large_logit_checkpoint, verbose=False)


def test_valid_checkpoint_with_large_logits_exports(large_logit_export):
    out, report = large_logit_export
    said = export.gate_message(report["parity"])
    assert said.startswith("max |diff| ") and "max |logit| " in said and "float64" in said
    gate = report["parity"]
    # Logits around 13, and a difference an absolute 1e-4 gate would reject.
    assert 8 < gate["logit_absmax"] < 30
    assert 1e-4 < gate["max_abs_diff"] <= gate["tolerance"]
    md = export.get_metadata(out)
    assert md["lgms.precision"] == "f32"


def test_wrong_batchnorm_fold_fails(large_logit_checkpoint, tmp_path, monkeypatch):
    real = export._bn_affine

    def off_by_one_percent(bn):
        s, t = real(bn)
        return s * 1.01, t

    monkeypatch.setattr(export, "_bn_affine", off_by_one_percent)
    with pytest.raises(
        SystemExit, match=r"parity check failed: max \|diff\| .* vs tolerance .* max \|logit\|"
    ):
        export.export_checkpoint(
            str(tmp_path / "broken.onnx"), "broken", ckpt=large_logit_checkpoint, verbose=False
        )


def test_parity_vectors_scale_their_tolerance_with_the_logits(
    large_logit_checkpoint, large_logit_export, tmp_path
):
    from lgms_models import parity, phantom
    from lgms_models.lgmsnet import load_checkpoint

    model = build_model()
    load_checkpoint(model, large_logit_checkpoint)
    model.eval()
    rep = parity.write_vectors(large_logit_export[0], model, [("x", phantom.inputs(1, 5)[0])], str(tmp_path))
    man = rep["manifest"]
    assert man["logit_absmax"] > 5
    assert man["tolerance"] == pytest.approx(export.RTOL * man["logit_absmax"])
    assert rep["gate"]["passed"] and rep["gate"]["tolerance"] == pytest.approx(man["tolerance"])

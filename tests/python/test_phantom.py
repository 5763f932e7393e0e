"""Phantom frames come from the Rust generator (``lgms-edge phantom``)."""

from __future__ import annotations

import numpy as np
import pytest

from lgms_models import phantom, preprocess


def test_frames_are_the_binarys_dataset(tmp_path):
    frames = phantom.frames(3, seed=5)
    phantom.write_dataset(str(tmp_path), 3, seed=5)
    assert len(frames) == 3
    for i, (img, mask) in enumerate(frames):
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        assert mask.shape == (256, 256) and set(np.unique(mask)) <= {0.0, 1.0}
        np.testing.assert_array_equal(img, preprocess.load_image(str(tmp_path / "images" / f"{i:05d}.png")))
        np.testing.assert_array_equal(mask, preprocess.load_mask(str(tmp_path / "masks" / f"{i:05d}.png")))


def test_frames_have_lesions_and_depend_on_the_seed_only():
    a, b, c = phantom.frames(2, seed=1), phantom.frames(2, seed=1), phantom.frames(2, seed=2)
    for (img, mask), (img_b, mask_b) in zip(a, b, strict=True):
        np.testing.assert_array_equal(img, img_b)
        np.testing.assert_array_equal(mask, mask_b)
        # A lesion, and an image that is neither blank nor saturated.
        assert 0.0 < mask.mean() < 0.5
        assert 10 < img.mean() < 200
    assert not np.array_equal(a[0][0], a[1][0])  # frames of one set differ
    assert not np.array_equal(a[0][0], c[0][0])  # and so do the seeds


def test_inputs_are_preprocessed_frames():
    (x,) = phantom.inputs(1, seed=3)
    ((img, _),) = phantom.frames(1, seed=3)
    assert x.shape == (1, 3, 256, 256) and x.dtype == np.float32
    np.testing.assert_array_equal(x, preprocess.to_tensor_layout(img))
    # The authors' double /255: real inputs are about +-0.01.
    assert 0.001 < np.abs(x).max() < 0.02


def test_endoscopy_frames_are_colour():
    ((img, mask),) = phantom.frames(1, seed=1, kind="endoscopy")
    assert not np.array_equal(img[..., 0], img[..., 2])
    assert mask.any()
    with pytest.raises(ValueError, match="phantom kind"):
        phantom.frames(1, seed=1, kind="mri")


def test_missing_binary_is_a_clear_error(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-lgms-edge"
    monkeypatch.setenv(phantom.ENV_VAR, str(missing))
    assert phantom.binary_path() == str(missing)
    with pytest.raises(phantom.BinaryNotFound, match="LGMS_EDGE_BIN") as err:
        phantom.inputs(1, seed=0)
    assert str(missing) in str(err.value) and "cargo build --release" in str(err.value)


def test_default_binary_is_the_checkouts_release_build(monkeypatch):
    monkeypatch.delenv(phantom.ENV_VAR, raising=False)
    assert phantom.binary_path() == phantom.DEFAULT_BIN
    assert phantom.DEFAULT_BIN.endswith("target/release/lgms-edge")


def test_generator_failure_carries_its_message(tmp_path):
    with pytest.raises(RuntimeError, match="count"):
        phantom.write_dataset(str(tmp_path), 0, seed=1)

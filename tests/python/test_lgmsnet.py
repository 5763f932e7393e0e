"""Python-side checks of the model, export, parity vectors and quantisation.

Run from the repository root: ``python3 -m pytest -q tests/python``.
Kept under ~3 minutes on 2 CPU cores: one random model is built, saved,
reloaded and exported once per session (module fixtures), and everything
else reuses it.
"""

from __future__ import annotations

import filecmp
import json
import os

import numpy as np
import onnx
import pytest
import torch

from lgms_models import phantom, preprocess
from lgms_models.export import (
    INPUT_SHAPE,
    OPSET,
    REQUIRED_METADATA,
    build_metadata,
    export_onnx,
    get_metadata,
    ort_run,
    prepare_for_export,
    random_init,
    reference_logits,
)
from lgms_models.lgmsnet import (
    EXPECTED_PARAMS,
    EXPECTED_STATE_DICT_ENTRIES,
    build_model,
    count_params,
    load_checkpoint,
    read_state_dict_spec,
)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TSV = os.path.join(ROOT, "models", "data", "lgmsnet_state_dict.tsv")
SHARED_TSV = os.path.join(ROOT, "..", "shared", "data", "lgmsnet_state_dict.tsv")
BUNDLED_F32 = os.path.join(ROOT, "models", "lgmsnet-random.f32.onnx")
BUNDLED_INT8 = [
    os.path.join(ROOT, "models", f)
    for f in ("lgmsnet-random.int8.onnx", "lgmsnet-random.int8-perchannel.onnx")
]
PARITY_DIR = os.path.join(ROOT, "models", "parity")

torch.set_num_threads(min(2, torch.get_num_threads()))


# ---------------------------------------------------------------------------
# Architecture vs the authors' checkpoint
# ---------------------------------------------------------------------------


def test_tsv_copy_matches_shared():
    assert os.path.isfile(TSV)
    if os.path.isfile(SHARED_TSV):
        assert filecmp.cmp(TSV, SHARED_TSV, shallow=False), "models/data copy differs from shared spec"


def test_state_dict_matches_checkpoint_spec():
    spec = read_state_dict_spec(TSV)
    assert len(spec) == EXPECTED_STATE_DICT_ENTRIES
    mine = [(k, list(v.shape)) for k, v in build_model().state_dict().items()]
    assert dict(mine) == dict(spec)  # names and shapes
    assert [k for k, _ in mine] == [k for k, _ in spec]  # and the authors' order


def test_param_count():
    assert count_params(build_model()) == EXPECTED_PARAMS == 2_321_393


# ---------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------


def test_preprocess_formula_bgr():
    # A pure-blue BGR pixel: channel 0 is blue, normalised with mean[0]/std[0].
    img = np.zeros((preprocess.INPUT_SIZE, preprocess.INPUT_SIZE, 3), np.uint8)
    img[..., 0] = 255
    x = preprocess.to_tensor_layout(img)
    assert x.shape == INPUT_SHAPE and x.dtype == np.float32
    expect = [
        (255 - 255 * 0.485) / (255 * 0.229) / 255,
        (0 - 255 * 0.456) / (255 * 0.224) / 255,
        (0 - 255 * 0.406) / (255 * 0.225) / 255,
    ]
    np.testing.assert_allclose(x[0, :, 0, 0], expect, rtol=1e-6)
    md = preprocess.PREPROCESS
    assert md["lgms.channel_order"] == "BGR"
    assert md["lgms.mean"] == "0.485,0.456,0.406"
    assert md["lgms.std"] == "0.229,0.224,0.225"
    assert md["lgms.max_pixel_value"] == "255"
    assert float(md["lgms.extra_scale"]) == 1 / 255
    assert md["lgms.extra_scale"] == "0.00392156862745098"


# ---------------------------------------------------------------------------
# Random checkpoint -> strict load -> folded export -> onnxruntime parity
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_model():
    return random_init(build_model(), seed=3)


@pytest.fixture(scope="module")
def checkpoint(random_model, tmp_path_factory):
    """Saved like the authors do (plain state_dict), with a DataParallel prefix."""
    path = tmp_path_factory.mktemp("ckpt") / "random.pth"
    torch.save({f"module.{k}": v for k, v in random_model.state_dict().items()}, path)
    return str(path)


@pytest.fixture(scope="module")
def loaded_model(checkpoint):
    m = build_model()
    load_checkpoint(m, checkpoint)  # strict=True inside
    return m.eval()


@pytest.fixture(scope="module")
def exported(loaded_model, tmp_path_factory):
    folded, n_folded, n_left = prepare_for_export(loaded_model)
    path = str(tmp_path_factory.mktemp("onnx") / "m.f32.onnx")
    md = build_metadata("test", "f32", "0" * 64, "none")
    export_onnx(folded, path, md)
    return {"path": path, "folded": folded, "n_folded": n_folded, "n_left": n_left}


def test_checkpoint_round_trip(random_model, loaded_model):
    a, b = random_model.state_dict(), loaded_model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_strict_load_rejects_wrong_names(tmp_path):
    sd = build_model().state_dict()
    sd["encoder4.0.conv_split.bn1.weight"] = sd.pop("encoder4.0.conv_spilt.bn1.weight")
    p = tmp_path / "bad.pth"
    torch.save(sd, p)
    with pytest.raises(RuntimeError):
        load_checkpoint(build_model(), str(p))


def test_bn_folding(exported):
    # 47 BNs; the two fusion-block outputs that feed a padded conv stay.
    assert exported["n_folded"] == 45 and exported["n_left"] == 2


def test_onnx_graph_shape_and_ops(exported):
    m = onnx.load(exported["path"])
    onnx.checker.check_model(m)
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    (inp,), (out,) = m.graph.input, m.graph.output

    def dims(v):
        return [d.dim_value for d in v.type.tensor_type.shape.dim]

    assert (inp.name, dims(inp)) == ("input", [1, 3, 256, 256])
    assert (out.name, dims(out)) == ("logits", [1, 1, 256, 256])
    ops = [n.op_type for n in m.graph.node]
    assert "Gelu" not in ops and "InstanceNormalization" not in ops
    assert ops.count("BatchNormalization") == 2
    assert all(n.domain in ("", "ai.onnx") for n in m.graph.node)


def test_gelu_is_exact_erf_chain(exported):
    """Each Erf must sit in x*(1+erf(x/sqrt2))*0.5, the chain tract fuses to GeluExact."""
    m = onnx.load(exported["path"])
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    producer = {o: n for n in m.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def const_of(node):
        vals = [consts[i] for i in node.input if i in consts]
        return float(vals[0]) if len(vals) == 1 and vals[0].size == 1 else None

    erfs = [n for n in m.graph.node if n.op_type == "Erf"]
    assert len(erfs) == 12  # 3 encoder blocks + 3 fusion blocks x 3
    for erf in erfs:
        div = producer[erf.input[0]]
        assert div.op_type == "Div" and const_of(div) == pytest.approx(2**0.5, rel=1e-6)
        (x,) = [i for i in div.input if i not in consts]
        (add,) = consumers[erf.output[0]]
        assert add.op_type == "Add" and const_of(add) == pytest.approx(1.0)
        (mul,) = consumers[add.output[0]]
        assert mul.op_type == "Mul" and x in mul.input
        (half,) = consumers[mul.output[0]]
        assert half.op_type == "Mul" and const_of(half) == pytest.approx(0.5)


def test_folded_export_matches_pytorch(exported, loaded_model):
    (x,) = phantom.inputs(1, seed=11)
    ref = reference_logits(loaded_model, x)
    got = ort_run(exported["path"], x)
    assert np.abs(got - ref).max() <= 1e-4
    # Not a degenerate model: both classes present.
    assert 0.01 < (ref > 0).mean() < 0.99


def test_metadata_keys(exported):
    for path in (exported["path"], BUNDLED_F32):
        md = get_metadata(path)
        missing = [k for k in REQUIRED_METADATA if k not in md]
        assert not missing, (path, missing)
        assert md["lgms.precision"] == "f32"
        for k, v in preprocess.PREPROCESS.items():
            assert md[k] == v, (path, k)


# ---------------------------------------------------------------------------
# Quantisation
# ---------------------------------------------------------------------------


def test_quantized_model_ops(exported, tmp_path):
    from lgms_models.quantize import INT8_OPS, calibration_frames, check_int8_ops, quantize

    f32_ops = {n.op_type for n in onnx.load(exported["path"]).graph.node}
    out = str(tmp_path / "m.int8.onnx")
    quantize(exported["path"], out, calibration_frames(None, 2), per_channel=False)
    for path in [out] + [p for p in BUNDLED_INT8 if os.path.isfile(p)]:
        m = onnx.load(path)
        assert not [n for n in m.graph.node if n.domain == "com.microsoft"]
        assert "com.microsoft" not in {o.domain for o in m.opset_import}
        counts = check_int8_ops(m, f32_ops)
        assert set(counts) <= f32_ops | INT8_OPS
        # Default recipe: the 37 dense and 3 groups-2 convs; depthwise
        # convs (and the narrow grouped ones) and every MatMul stay f32.
        assert counts.get("QLinearConv", 0) == 40 and counts.get("QLinearMatMul", 0) == 0
        assert counts.get("Conv", 0) == 20
        md = get_metadata(m)
        assert md["lgms.precision"] == "int8"
        assert all(k in md for k in REQUIRED_METADATA)
    # 7-bit weights (reduce_range) unless asked otherwise: |w| <= 64.
    from onnx import numpy_helper

    q = onnx.load(out)
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    for n in q.graph.node:
        if n.op_type == "QLinearConv":
            w = inits[n.input[3]]
            assert w.dtype == np.int8 and np.abs(w.astype(np.int32)).max() <= 64, n.name
    # Runs in onnxruntime and gives a usable mask.
    x = calibration_frames(None, 1, seed=77)[0]
    assert ort_run(out, x).shape == (1, 1, 256, 256)


def test_calibration_frames_from_a_folder(tmp_path):
    """--calib DIR: its pictures in name order; the held-out report takes the ones after."""
    from lgms_models.quantize import calibration_frames

    phantom.write_dataset(str(tmp_path), 3, seed=4)
    images = [str(tmp_path / "images" / f"{i:05d}.png") for i in range(3)]
    calib = calibration_frames(str(tmp_path), 2)
    assert len(calib) == 2
    for x, path in zip(calib, images[:2], strict=True):
        np.testing.assert_array_equal(x, preprocess.preprocess_path(path))
    (held_out,) = calibration_frames(str(tmp_path), 4, skip=2)
    np.testing.assert_array_equal(held_out, preprocess.preprocess_path(images[2]))
    assert calibration_frames(str(tmp_path), 4, skip=3) == []
    with pytest.raises(SystemExit, match="no images"):
        calibration_frames(str(tmp_path / "masks" / "none"), 1)


# ---------------------------------------------------------------------------
# Bundled parity vectors
# ---------------------------------------------------------------------------


def test_parity_manifest():
    with open(os.path.join(PARITY_DIR, "manifest.json"), encoding="utf-8") as f:
        man = json.load(f)
    # tolerance: the absolute max |diff| lgms-edge parity allows, rtol * max(1, max |logit|).
    assert (
        {"model", "tolerance", "vectors"}
        <= set(man)
        <= {"model", "tolerance", "rtol", "logit_absmax", "vectors"}
    )
    assert os.path.isfile(os.path.join(ROOT, man["model"]))
    assert 0 < man["tolerance"] <= 1e-3 and 2 <= len(man["vectors"]) <= 3
    for v in man["vectors"]:
        assert os.path.getsize(os.path.join(PARITY_DIR, v["input"])) == 4 * 3 * 256 * 256
        assert os.path.getsize(os.path.join(PARITY_DIR, v["logits"])) == 4 * 256 * 256
    # The bundled model reproduces the stored logits in onnxruntime.
    v = man["vectors"][0]
    x = np.fromfile(os.path.join(PARITY_DIR, v["input"]), "<f4").reshape(INPUT_SHAPE)
    ref = np.fromfile(os.path.join(PARITY_DIR, v["logits"]), "<f4").reshape(1, 1, 256, 256)
    assert np.abs(ort_run(os.path.join(ROOT, man["model"]), x) - ref).max() <= man["tolerance"]


# ---------------------------------------------------------------------------
# Training pieces
# ---------------------------------------------------------------------------


def test_metric_and_loss():
    from lgms_models.train import bce_dice_loss, iou_per_image

    t = torch.zeros(2, 1, 4, 4)
    t[0, 0, :2] = 1  # 8 pixels; image 1 has an empty mask
    z = torch.full_like(t, -5.0)
    z[0, 0, :1] = 5.0  # predict 4 of the 8
    iou = iou_per_image(z, t)
    assert iou[0].item() == pytest.approx((4 + 1e-5) / (8 + 1e-5))
    assert iou[1].item() == pytest.approx(1.0)  # empty vs empty counts as perfect
    perfect = bce_dice_loss(torch.where(t > 0, 20.0, -20.0)[:1], t[:1])
    assert perfect.item() < 1e-3


def test_train_smoke(tmp_path):
    from lgms_models.train import main

    phantom.write_dataset(str(tmp_path / "tr"), 4, seed=1)
    phantom.write_dataset(str(tmp_path / "va"), 2, seed=2)
    main(
        [
            "--data",
            str(tmp_path / "tr"),
            "--val",
            str(tmp_path / "va"),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--batch",
            "2",
            "--crop",
            "64",
            "--device",
            "cpu",
        ]
    )
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["best"] is not None and len(log["epochs"]) == 1
    m = build_model()
    load_checkpoint(m, str(tmp_path / "run" / "best.pth"))

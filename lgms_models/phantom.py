"""Phantom frames from the runtime's own generator, ``lgms-edge phantom``.

The Python side draws no phantom of its own: the frames that calibrate a
random model's BatchNorm statistics, the parity vectors of a model without
``--image``, the int8 calibration without ``--calib`` and the tests all come
from the Rust binary, so Python and the runtime see the same images.

The binary is ``$LGMS_EDGE_BIN`` if set, else ``target/release/lgms-edge`` in
this checkout (``cargo build --release``; ``make test`` builds it before the
Python tests).
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import numpy as np

from lgms_models import preprocess

ENV_VAR = "LGMS_EDGE_BIN"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO_ROOT, "target", "release", "lgms-edge")
KINDS = ("ultrasound", "endoscopy")


class BinaryNotFound(FileNotFoundError):
    """The lgms-edge binary is not where ``$LGMS_EDGE_BIN`` (or the default) says."""


def binary_path() -> str:
    """Where the binary should be: ``$LGMS_EDGE_BIN``, else the checkout's release build."""
    return os.environ.get(ENV_VAR) or DEFAULT_BIN


def require_binary() -> str:
    """The binary's path; raises :class:`BinaryNotFound` with the fix if it is missing."""
    path = binary_path()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        source = f"from ${ENV_VAR}" if os.environ.get(ENV_VAR) else f"the release build; ${ENV_VAR} is unset"
        raise BinaryNotFound(
            f"lgms-edge binary not found at {path} ({source}); the phantom frames come from it; "
            f"fix: `cargo build --release` in {REPO_ROOT}, or set {ENV_VAR}=/path/to/lgms-edge"
        )
    return path


def write_dataset(
    out: str, count: int, seed: int, kind: str = "ultrasound", size: int = preprocess.INPUT_SIZE
) -> None:
    """``lgms-edge phantom``: ``out/images/NNNNN.png`` and ``out/masks/NNNNN.png``."""
    if kind not in KINDS:
        raise ValueError(f"phantom kind {kind!r}; expected one of {KINDS}")
    cmd = [
        require_binary(),
        "phantom",
        "--out",
        out,
        "--count",
        str(count),
        "--seed",
        str(seed),
        "--kind",
        kind,
        "--size",
        f"{size}x{size}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stderr}")


def frames(count: int, seed: int, kind: str = "ultrasound") -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` phantom frames at the network's size: (BGR uint8 HxWx3, mask {0,1} float32 HxW)."""
    with tempfile.TemporaryDirectory(prefix="lgms-phantom-") as d:
        write_dataset(d, count, seed, kind)
        out = []
        for i in range(count):
            name = f"{i:05d}.png"
            out.append(
                (
                    preprocess.load_image(os.path.join(d, "images", name)),
                    preprocess.load_mask(os.path.join(d, "masks", name)),
                )
            )
    return out


def inputs(count: int, seed: int, kind: str = "ultrasound") -> list[np.ndarray]:
    """``count`` preprocessed phantom frames: network inputs of shape 1x3x256x256, float32."""
    return [preprocess.to_tensor_layout(img) for img, _ in frames(count, seed, kind)]

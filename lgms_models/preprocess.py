"""Input preprocessing exactly as the authors' data loader, without albumentations.

Their pipeline (CMUNeXt-style loader) is, per image:

    img = cv2.imread(path)                        # uint8, **BGR**
    img = albu.Resize(256, 256)(img)              # cv2 INTER_LINEAR on uint8
    img = albu.Normalize()(img)                   # (img - 255*mean) / (255*std), float32,
                                                  # ImageNet mean/std applied to the BGR
                                                  # array in list order
    img = img.astype("float32") / 255             # a second division by 255
    img = img.transpose(2, 0, 1)                  # CHW

Masks go through the same Resize with nearest-neighbour interpolation (what
albumentations does for masks), then /255.

The constants live in ``PREPROCESS`` and are written into every exported
model's metadata, so the Rust runtime never hard-codes them.
"""

from __future__ import annotations

import cv2
import numpy as np

INPUT_SIZE = 256

# Keys/values the Rust runtime reads from ONNX metadata_props (see export.py).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MAX_PIXEL_VALUE = 255.0
EXTRA_SCALE = 1.0 / 255.0

PREPROCESS = {
    "lgms.channel_order": "BGR",
    "lgms.mean": ",".join(repr(v) for v in MEAN),
    "lgms.std": ",".join(repr(v) for v in STD),
    "lgms.max_pixel_value": "255",
    "lgms.extra_scale": repr(EXTRA_SCALE),
    "lgms.resize": "bilinear",
    "lgms.threshold": "0.0",
}


def normalize(img_bgr: np.ndarray) -> np.ndarray:
    """albumentations.Normalize() then /255, HWC uint8 -> HWC float32.

    albumentations computes ``(img - mean*max) * (1 / (std*max))`` in float32;
    we do the same so results agree bit-for-bit with the authors' loader.
    """
    mean = np.array(MEAN, dtype=np.float32) * MAX_PIXEL_VALUE
    denom = np.reciprocal(np.array(STD, dtype=np.float32) * MAX_PIXEL_VALUE)
    x = img_bgr.astype(np.float32)
    x -= mean
    x *= denom
    return x.astype(np.float32) / 255


def load_image(path: str, size: int = INPUT_SIZE) -> np.ndarray:
    """Read a picture like the authors do: BGR uint8, resized bilinearly."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    return img


def load_mask(path: str, size: int = INPUT_SIZE) -> np.ndarray:
    """Binary mask in {0, 1} as float32 HxW (nearest resize, like albumentations)."""
    m = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise FileNotFoundError(path)
    if m.shape[:2] != (size, size):
        m = cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST)
    # The authors use mask/255 directly; thresholding keeps anti-aliased or
    # JPEG-ish masks binary without changing a clean 0/255 mask.
    return (m > 127).astype(np.float32)


def to_tensor_layout(img_bgr_resized: np.ndarray) -> np.ndarray:
    """HWC uint8 BGR (already at network size) -> 1x3xHxW float32 network input."""
    x = normalize(img_bgr_resized)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def preprocess_path(path: str) -> np.ndarray:
    """File on disk -> the network's input tensor (1x3x256x256 float32)."""
    return to_tensor_layout(load_image(path))

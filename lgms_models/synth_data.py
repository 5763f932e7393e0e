"""Stand-in dataset writer, same layout as ``lgms-edge phantom`` (images/, masks/).

    python3 -m lgms_models.synth_data --out DIR --count N --seed S

For tests and for trying train.py before the Rust phantom generator exists.
Real training data should come from ``lgms-edge phantom --kind ultrasound``
(that is what the runtime's demo source shows).
"""

from __future__ import annotations

import argparse
import os
import sys

import cv2

from lgms_models.preprocess import synthetic_phantom


def write_set(out: str, count: int, seed: int) -> None:
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    os.makedirs(os.path.join(out, "masks"), exist_ok=True)
    for i in range(count):
        # Distinct seed streams per set so train/val never share frames.
        img, mask = synthetic_phantom(seed * 1_000_003 + i)
        cv2.imwrite(os.path.join(out, "images", f"{i:05d}.png"), img)
        cv2.imwrite(os.path.join(out, "masks", f"{i:05d}.png"), mask)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    write_set(a.out, a.count, a.seed)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Train LGMSNet on phantom data (``lgms-edge phantom`` output).

    python3 -m lgms_models.train --data DIR --val DIR --epochs 40 --out models/runs/phantom-us

DIR holds ``images/*.png`` and ``masks/*.png`` with matching file names. The
script is self-contained (torch, numpy, opencv) so the dataset can be made
here with the Rust binary and carried to a GPU machine that lacks it.

Faithful to the authors where it matters for deployment:

* preprocessing is exactly ``preprocess.py`` (cv2 BGR, bilinear resize to 256,
  albumentations-Normalize formula, second /255), so the exported metadata
  describes what the weights were trained on;
* loss 0.5*BCE-with-logits + (1 - soft Dice), their ``BCEDiceLoss``;
* SGD momentum 0.9, weight decay 1e-4, poly lr (power 0.9) by default,
  AdamW optional (converges faster in short runs);
* augmentation RandomRotate90 + flips; 128x128 random crops for training
  (4x cheaper per step), evaluation on full 256x256 frames;
* model selection on validation IoU with their metric: per image
  IoU = (|P & G| + 1e-5) / (|P | G| + 1e-5), P = logit > 0, Dice = 2 IoU / (1 + IoU),
  averaged over images.

Outputs in ``--out``: ``best.pth`` (plain state_dict, CPU tensors, the
authors' format), ``last.pth`` and ``log.json``.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from lgms_models import preprocess
from lgms_models.lgmsnet import build_model, count_params

# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def list_pairs(root: str) -> list[tuple[str, str]]:
    """(image, mask) paths; masks are matched by file stem."""
    imgs = sorted(glob.glob(os.path.join(root, "images", "*.png")))
    if not imgs:
        raise SystemExit(f"no images in {root}/images")
    masks = {
        os.path.splitext(os.path.basename(p))[0]: p for p in glob.glob(os.path.join(root, "masks", "*.png"))
    }
    pairs = []
    for p in imgs:
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem not in masks:
            raise SystemExit(f"no mask for {p}")
        pairs.append((p, masks[stem]))
    return pairs


def load_set(root: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All frames in memory as resized uint8 BGR (N,256,256,3) and {0,1} masks (N,256,256).

    uint8 keeps 1000 frames under 200 MB; normalisation happens per batch.
    """
    pairs = list_pairs(root)[:limit]
    imgs = np.stack([preprocess.load_image(i) for i, _ in pairs])
    masks = np.stack([preprocess.load_mask(m) for _, m in pairs]).astype(np.uint8)
    return imgs, masks


def to_input(batch_bgr: np.ndarray) -> torch.Tensor:
    """(B,H,W,3) uint8 BGR -> (B,3,H,W) float32, the exact deployment preprocessing."""
    x = preprocess.normalize(batch_bgr)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def augment_crop(
    img: np.ndarray, mask: np.ndarray, crop: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random crop, then RandomRotate90 and flips, identically on image and mask."""
    h, w = mask.shape
    if crop < h or crop < w:
        y = int(rng.integers(0, h - crop + 1))
        x = int(rng.integers(0, w - crop + 1))
        img, mask = img[y : y + crop, x : x + crop], mask[y : y + crop, x : x + crop]
    k = int(rng.integers(0, 4))
    img, mask = np.rot90(img, k), np.rot90(mask, k)
    if rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        img, mask = img[::-1], mask[::-1]
    return img, mask


# ---------------------------------------------------------------------------
# Loss and metric (the authors')
# ---------------------------------------------------------------------------


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    smooth = 1e-5
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = (2.0 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return 0.5 * bce + (1.0 - dice.mean())


def iou_per_image(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image IoU with P = logit > 0 (= sigmoid > 0.5)."""
    p = (logits > 0).flatten(1)
    g = (target > 0.5).flatten(1)
    inter = (p & g).sum(1).double()
    union = (p | g).sum(1).double()
    return (inter + 1e-5) / (union + 1e-5)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, imgs: np.ndarray, masks: np.ndarray, device: torch.device, batch: int = 8
) -> dict[str, float]:
    model.eval()
    ious = []
    for i in range(0, len(imgs), batch):
        x = to_input(imgs[i : i + batch]).to(device)
        y = torch.from_numpy(masks[i : i + batch]).to(device)[:, None].float()
        ious.append(iou_per_image(model(x), y).cpu())
    iou = torch.cat(ious)
    dice = 2 * iou / (1 + iou)
    return {"iou": float(iou.mean()), "dice": float(dice.mean())}


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    else:
        torch.backends.cudnn.benchmark = True
    os.makedirs(args.out, exist_ok=True)

    t0 = time.time()
    tr_imgs, tr_masks = load_set(args.data, args.limit)
    va_imgs, va_masks = load_set(args.val, args.val_limit)
    load_s = time.time() - t0
    print(
        f"train {len(tr_imgs)} frames from {args.data}, val {len(va_imgs)} from {args.val} "
        f"({load_s:.1f}s), device {device}",
        flush=True,
    )

    model = build_model().to(device)
    steps_per_epoch = max(1, len(tr_imgs) // args.batch)  # drop_last: BN wants full batches
    total_steps = steps_per_epoch * args.epochs
    if args.optim == "sgd":
        opt = torch.optim.SGD(
            model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay, nesterov=False
        )
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    # Poly decay per step, like the authors' (1 - it/max_it)^0.9. The horizon
    # is mutable: with --max-minutes it shrinks after epoch 1 to the epochs
    # that fit, so the lr still decays to ~0 instead of stopping mid-schedule.
    horizon = [total_steps]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: max(0.0, 1 - min(it, horizon[0] - 1) / horizon[0]) ** 0.9
    )
    n_epochs = args.epochs

    log = {
        "args": vars(args),
        "device": str(device),
        "torch": torch.__version__,
        "params": count_params(model),
        "train_frames": len(tr_imgs),
        "val_frames": len(va_imgs),
        "steps_per_epoch": steps_per_epoch,
        "epochs": [],
        "best": None,
    }
    best_iou = -1.0
    deadline = t0 + args.max_minutes * 60 if args.max_minutes else math.inf
    epoch = 0
    while epoch < n_epochs:
        epoch += 1
        model.train()
        te = time.time()
        order = rng.permutation(len(tr_imgs))
        losses = []
        for s in range(steps_per_epoch):
            idx = order[s * args.batch : (s + 1) * args.batch]
            pairs = [augment_crop(tr_imgs[i], tr_masks[i], args.crop, rng) for i in idx]
            x = to_input(np.stack([p[0] for p in pairs])).to(device, non_blocking=True)
            y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.float32))[:, None].to(device)
            loss = bce_dice_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
        train_s = time.time() - te
        tv = time.time()
        val = evaluate(model, va_imgs, va_masks, device)
        val_s = time.time() - tv
        rec = {
            "epoch": epoch,
            "loss": float(torch.stack(losses).mean()),
            "lr": sched.get_last_lr()[0],
            "val_iou": val["iou"],
            "val_dice": val["dice"],
            "train_seconds": round(train_s, 2),
            "val_seconds": round(val_s, 2),
        }
        log["epochs"].append(rec)
        improved = val["iou"] > best_iou
        if improved:
            best_iou = val["iou"]
            torch.save(
                {k: v.detach().cpu() for k, v in model.state_dict().items()},
                os.path.join(args.out, "best.pth"),
            )
            log["best"] = {"epoch": epoch, "val_iou": val["iou"], "val_dice": val["dice"]}
        print(
            f"epoch {epoch:3d}  loss {rec['loss']:.4f}  val IoU {val['iou']:.4f}  "
            f"Dice {val['dice']:.4f}  {train_s:.1f}s+{val_s:.1f}s{'  *best' if improved else ''}",
            flush=True,
        )
        log["wall_seconds"] = round(time.time() - t0, 1)
        with open(os.path.join(args.out, "log.json"), "w", encoding="utf-8") as f:
            json.dump(log, f, indent=2)
        if epoch == 1 and args.max_minutes:
            # Epoch 1 includes warm-up (cuDNN autotune, allocator), so this
            # errs on the short side.
            per_epoch = time.time() - te
            fit = max(1, int((deadline - time.time()) / per_epoch) + 1)
            if fit < n_epochs:
                n_epochs = fit
                horizon[0] = steps_per_epoch * n_epochs
                log["epochs_planned"] = n_epochs
                print(
                    f"--max-minutes {args.max_minutes}: {per_epoch:.0f}s/epoch, training {n_epochs} epochs",
                    flush=True,
                )
        if time.time() > deadline:
            print(f"stopping: --max-minutes {args.max_minutes} reached", flush=True)
            break
    torch.save(
        {k: v.detach().cpu() for k, v in model.state_dict().items()}, os.path.join(args.out, "last.pth")
    )
    with open(os.path.join(args.out, "log.json"), "w", encoding="utf-8") as f:
        json.dump(log, f, indent=2)
    return log


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="train LGMSNet on phantom data")
    ap.add_argument("--data", required=True, help="training set: DIR/images/*.png, DIR/masks/*.png")
    ap.add_argument("--val", required=True, help="held-out set (different phantom seed)")
    ap.add_argument("--out", required=True, help="run folder for best.pth, last.pth, log.json")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128, help="training crop size (eval is full 256)")
    ap.add_argument("--optim", choices=("sgd", "adamw"), default="sgd")
    ap.add_argument("--lr", type=float, default=None, help="default 0.01 (sgd) / 2e-3 (adamw)")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training frames")
    ap.add_argument("--val-limit", type=int, default=None)
    ap.add_argument("--max-minutes", type=float, default=None, help="stop after the epoch that crosses this")
    a = ap.parse_args(argv)
    if a.lr is None:
        a.lr = 0.01 if a.optim == "sgd" else 2e-3
    return a


def main(argv: list[str] | None = None) -> None:
    log = train(parse_args(argv))
    print(json.dumps({"best": log["best"], "wall_seconds": log.get("wall_seconds")}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])

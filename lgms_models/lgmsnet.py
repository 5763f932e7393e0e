"""LGMSNet (Dong et al., ECAI 2025) in PyTorch, written from docs/lgmsnet.md.

The authors publish checkpoints as plain ``state_dict``s, so what matters here is
that every module *name* and parameter *shape* matches theirs exactly: the class
and attribute names below (including their spellings ``spilt`` and ``resiual``)
are the authors', and the registration order follows their checkpoint so that
``state_dict()`` lists the 372 entries in the same order as
``models/data/lgmsnet_state_dict.tsv``.

Export-friendliness is a second goal: the patch rearrangement of the hybrid
block is written with plain reshape/permute (no einops) so the legacy ONNX
exporter emits Reshape/Transpose with constant shapes, which tract handles.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import torch
import torch.nn as nn

# Fixed by the architecture, see docs/lgmsnet.md ("Size").
EXPECTED_PARAMS = 2_321_393
EXPECTED_STATE_DICT_ENTRIES = 372


# ---------------------------------------------------------------------------
# MobileViT-style building blocks (the authors reuse MobileViT helper names)
# ---------------------------------------------------------------------------


def conv_1x1_bn(inp: int, oup: int) -> nn.Sequential:
    """C1: 1x1 conv (no bias) + BN + SiLU; indices 0/1 are checkpoint names."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.SiLU(),
    )


def conv_nxn_bn(inp: int, oup: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """CN: kxk conv (no bias, same padding) + BN + SiLU."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(oup),
        nn.SiLU(),
    )


class FeedForward(nn.Module):
    """Pre-norm MLP; Sequential indices (0 norm, 1 fc, 4 fc) are checkpoint names."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Pre-norm multi-head self-attention over the token axis.

    Input is (B, P, N, D): P = 4 pixel offsets inside a 2x2 patch, N tokens.
    Attention mixes the N tokens independently for each P (sparse attention).
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 8, dropout: float = 0.0):
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.norm = nn.LayerNorm(dim)
        self.attend = nn.Softmax(dim=-1)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, p, n, _ = x.shape
        x = self.norm(x)
        qkv = self.to_qkv(x)
        # (B, P, N, 3*H*Dh) -> (3, B, P, H, N, Dh); one reshape+transpose instead
        # of chunk+3 rearranges keeps the exported graph small.
        qkv = qkv.reshape(b, p, n, 3, self.heads, self.dim_head).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]
        dots = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        attn = self.attend(dots)
        out = torch.matmul(attn, v)  # (B, P, H, N, Dh)
        out = out.permute(0, 1, 3, 2, 4).reshape(b, p, n, self.heads * self.dim_head)
        return self.to_out(out)


class Transformer(nn.Module):
    """``layers.{i}.0`` = attention, ``layers.{i}.1`` = feed-forward (checkpoint names)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        Attention(dim, heads, dim_head, dropout),
                        FeedForward(dim, mlp_dim, dropout),
                    ]
                )
                for _ in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


class SpiltConv(nn.Module):
    """Cheap local branch for the channels that skip attention (``conv_spilt``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.dwconv3x3 = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.dwconv1x1 = nn.Conv2d(channels, channels, 1, 1, 0, groups=channels, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.dwconv1x1(self.relu(self.bn1(self.dwconv3x3(x)))))


class MobileViTBlocktem_CT(nn.Module):
    """Hybrid conv / sparse-attention block.

    Channels after ``conv2`` are split: ``split[0]`` go through the transformer
    (tokens = pixels grouped by their offset inside 2x2 patches), ``split[1]``
    through a depthwise branch. Both are concatenated, projected by ``conv3``,
    concatenated with the block input and fused by ``conv4``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        split: Iterable[int],
        mlp_dim: int,
        depth: int = 1,
        heads: int = 4,
        dim_head: int = 8,
        patch_size: tuple[int, int] = (2, 2),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.split = list(split)
        assert sum(self.split) == out_ch, (self.split, out_ch)
        self.ph, self.pw = patch_size
        dim = self.split[0]
        self.conv1 = conv_nxn_bn(in_ch, out_ch, 3)
        self.conv2 = conv_1x1_bn(out_ch, out_ch)
        self.conv_spilt = SpiltConv(self.split[1])
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, dropout)
        self.conv3 = conv_1x1_bn(out_ch, out_ch)
        self.conv4 = conv_nxn_bn(in_ch + out_ch, out_ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        x = self.conv2(self.conv1(x))
        x1, x2 = torch.split(x, self.split, dim=1)
        x2 = self.conv_spilt(x2) + x2

        # b d (h ph) (w pw) -> b (ph pw) (h w) d, as in MobileViT: token (p, n)
        # is pixel (ph*h + i, pw*w + j), p = i*pw + j, n = h*(W/pw) + w.
        b, d, hh, ww = x1.shape
        h, w = hh // self.ph, ww // self.pw
        t = x1.reshape(b, d, h, self.ph, w, self.pw)
        t = t.permute(0, 3, 5, 2, 4, 1).reshape(b, self.ph * self.pw, h * w, d)
        t = self.transformer(t)
        t = t.reshape(b, self.ph, self.pw, h, w, d).permute(0, 5, 3, 1, 4, 2)
        x1 = t.reshape(b, d, hh, ww)

        x = self.conv3(torch.cat((x1, x2), dim=1))
        x = torch.cat((x, y), dim=1)
        return self.conv4(x)


# ---------------------------------------------------------------------------
# CMUNeXt-style blocks
# ---------------------------------------------------------------------------


class CMUNeXtBlock_MK_resiual2(nn.Module):
    """Multi-kernel depthwise block: channel groups see 3/5/7/9 receptive fields.

    Attribute order (norm_act first) follows the checkpoint's entry order.
    """

    def __init__(self, ch: int):
        super().__init__()
        assert ch % 4 == 0, ch
        g = ch // 4
        self.groups = g
        self.norm_act = nn.Sequential(nn.GroupNorm(4, ch), nn.GELU())
        self.local_dwc = nn.Conv2d(g, g, 3, padding=1, groups=g)
        self.global_dwc_s = nn.Conv2d(g, g, 5, padding=2, groups=g)
        self.global_dwc_m = nn.Conv2d(g, g, 7, padding=3, groups=g)
        self.global_dwc_l = nn.Conv2d(g, g, 9, padding=4, groups=g)
        self.conv_1x1_bn = conv_1x1_bn(ch, g)
        self.conv_nxn_bn = conv_nxn_bn(g, ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, m_, l_, xl = torch.split(x, self.groups, dim=1)
        y = torch.cat(
            (
                self.local_dwc(s),
                self.global_dwc_s(m_),
                self.global_dwc_m(l_),
                self.global_dwc_l(xl),
            ),
            dim=1,
        )
        y = self.norm_act(y + x)
        y = self.conv_nxn_bn(self.conv_1x1_bn(y))
        return y + x


class conv_block(nn.Module):
    """Stem: 3x3 conv (bias) + BN + ReLU."""

    def __init__(self, ch_in: int, ch_out: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(ch_in, ch_out, 3, 1, 1, bias=True),
            nn.BatchNorm2d(ch_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class up_conv(nn.Module):
    """x2 bilinear upsampling (align_corners=False) + 3x3 conv + BN + ReLU."""

    def __init__(self, ch_in: int, ch_out: int):
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(ch_in, ch_out, 3, 1, 1, bias=True),
            nn.BatchNorm2d(ch_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class fusion_conv(nn.Module):
    """Decoder fusion: grouped 3x3 then two 1x1 convs, each followed by GELU, BN.

    Note BN comes *after* GELU here, so these BNs cannot be folded into the
    preceding conv (export.py folds them into the following 1x1 conv instead).
    """

    def __init__(self, ch_in: int, ch_out: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(ch_in, ch_in, 3, 1, 1, groups=2, bias=True),
            nn.GELU(),
            nn.BatchNorm2d(ch_in),
            nn.Conv2d(ch_in, ch_out * 4, 1),
            nn.GELU(),
            nn.BatchNorm2d(ch_out * 4),
            nn.Conv2d(ch_out * 4, ch_out, 1),
            nn.GELU(),
            nn.BatchNorm2d(ch_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


# ---------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------


class MKtinyvit4_CT(nn.Module):
    """LGMSNet: U-shaped, 4 pooling steps, hybrid blocks at the two deepest levels."""

    def __init__(
        self,
        input_channel: int = 3,
        num_classes: int = 1,
        dims: Iterable[int] = (16, 32, 64, 128, 128),
        spilt_list: Iterable[Iterable[int]] = ((96, 32), (96, 32), (96, 32), (48, 16)),
    ):
        super().__init__()
        dims = list(dims)
        sl = [list(s) for s in spilt_list]
        self.Maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.stem = conv_block(input_channel, dims[0])
        # Each of encoder1..3: multi-kernel block on the stage width, then C1
        # to the next width (16->16, 16->32, 32->64).
        self.encoder1 = nn.Sequential(CMUNeXtBlock_MK_resiual2(dims[0]), conv_1x1_bn(dims[0], dims[0]))
        self.encoder2 = nn.Sequential(CMUNeXtBlock_MK_resiual2(dims[0]), conv_1x1_bn(dims[0], dims[1]))
        self.encoder3 = nn.Sequential(CMUNeXtBlock_MK_resiual2(dims[1]), conv_1x1_bn(dims[1], dims[2]))
        self.encoder4 = nn.Sequential(MobileViTBlocktem_CT(dims[2], dims[3], sl[0], 256))
        self.encoder5 = nn.Sequential(MobileViTBlocktem_CT(dims[3], dims[4], sl[1], 256))
        self.Up5 = up_conv(dims[4], dims[3])
        self.Up_conv5 = MobileViTBlocktem_CT(dims[3] * 2, dims[3], sl[2], 256)
        self.Up4 = up_conv(dims[3], dims[2])
        self.Up_conv4 = nn.Sequential(
            fusion_conv(dims[2] * 2, dims[2]),
            MobileViTBlocktem_CT(dims[2], dims[2], sl[3], 128),
        )
        self.Up3 = up_conv(dims[2], dims[1])
        self.Up_conv3 = fusion_conv(dims[1] * 2, dims[1])
        self.Up2 = up_conv(dims[1], dims[0])
        self.Up_conv2 = fusion_conv(dims[0] * 2, dims[0])
        self.Conv_1x1 = nn.Conv2d(dims[0], num_classes, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.encoder1(self.stem(x))
        x2 = self.encoder2(self.Maxpool(x1))
        x3 = self.encoder3(self.Maxpool(x2))
        x4 = self.encoder4(self.Maxpool(x3))
        x5 = self.encoder5(self.Maxpool(x4))

        # Skip first, then the upsampled decoder features.
        d5 = self.Up_conv5(torch.cat((x4, self.Up5(x5)), dim=1))
        d4 = self.Up_conv4(torch.cat((x3, self.Up4(d5)), dim=1))
        d3 = self.Up_conv3(torch.cat((x2, self.Up3(d4)), dim=1))
        d2 = self.Up_conv2(torch.cat((x1, self.Up2(d3)), dim=1))
        return self.Conv_1x1(d2)


class GroupNormExport(nn.GroupNorm):
    """GroupNorm with the same parameters, with reductions written as MatMuls.

    Used only for ONNX export (``export.py`` swaps it in). A full-resolution
    group holds 262,144 values; summed naively in f32 (what onnxruntime's
    InstanceNormalization and tract's fused Reduce<Sum> do) the mean is off by
    ~1e-4 relative, which this network amplifies to ~1e-2 in the logits.
    Averaging each row with a MatMul by a constant 1/W vector, then the row
    means with a 1/R vector, keeps every accumulation short (<= 1024 terms)
    and cannot be fused back into one long reduction. The centred second pass
    avoids E[x^2]-E[x]^2 cancellation. Only MatMul/Sub/Mul/Add/Sqrt/Div.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        r = (c // self.num_groups) * h
        t = x.reshape(b, self.num_groups, r, w)
        avg_w = torch.full((w, 1), 1.0 / w, dtype=x.dtype, device=x.device)
        avg_r = torch.full((1, r), 1.0 / r, dtype=x.dtype, device=x.device)
        mu = torch.matmul(avg_r, torch.matmul(t, avg_w))  # (b, G, 1, 1)
        tc = t - mu
        var = torch.matmul(avg_r, torch.matmul(tc * tc, avg_w))
        t = tc / torch.sqrt(var + self.eps)
        return t.reshape(b, c, h, w) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    @classmethod
    def from_group_norm(cls, gn: nn.GroupNorm) -> GroupNormExport:
        m = cls(gn.num_groups, gn.num_channels, gn.eps, gn.affine)
        m.load_state_dict(gn.state_dict())
        return m


# The authors' training scripts call the network this.
SegmsNet = MKtinyvit4_CT


def build_model() -> MKtinyvit4_CT:
    """LGMSNet exactly as the authors configure it (3 in, 1 logit out)."""
    return MKtinyvit4_CT(input_channel=3, num_classes=1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def clean_state_dict(sd: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Accept the common wrappers around a state_dict.

    Checkpoints saved from ``nn.DataParallel`` prefix every key with
    ``module.``; some training scripts wrap the dict in {"state_dict": ...}.
    """
    if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    out = OrderedDict()
    for k, v in sd.items():
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Load an authors'-format checkpoint strictly (any name mismatch is an error).

    ``map_location="cpu"`` because the authors save from CUDA models.
    """
    sd = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(clean_state_dict(sd), strict=True)


def read_state_dict_spec(path: str | os.PathLike) -> list[tuple[str, list[int]]]:
    """Parse the checkpoint spec (.tsv: name <TAB> [d0, d1, ...])."""
    spec = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            name, shape = line.split("\t")
            dims = shape.strip().strip("[]").strip()
            spec.append((name, [int(d) for d in dims.split(",")] if dims else []))
    return spec


if __name__ == "__main__":
    m = build_model()
    print(f"params: {count_params(m):,}  state_dict entries: {len(m.state_dict())}")

"""Purifier networks, scaled down for the CPU: the HGD U-Net ("DUNET") and the NRP/ESRGAN RRDB generator.

Both are faithful to the layouts of the official code (docs/REFERENCE-IMPLEMENTATIONS.md, 5a and 5b) with fewer
channels and blocks; the paper-sized settings are the ``*_PAPER`` dicts (for reference, not used here).

- ``UNetDenoiser`` (HGD, Liao et al. CVPR 2018, Fig. 3 "DUNET"): blocks Conv3x3 (no bias) + BN + ReLU; an
  encoder whose stages 2.. start with a stride-2 block; a decoder whose stages upsample bilinearly to the
  skip's size and concatenate the encoder feature; a final 1x1 conv (no bias) predicts the negative noise,
  and the output is ``x + residual`` (the official code does not clamp; ``Preprocessor.purify`` clamps to
  [0, 1], see ``defenses.purifiers.base``).
- ``RRDBNet`` (NRP, Naseer et al. CVPR 2020; ESRGAN's generator without upsampling): conv3x3 -> nb x RRDB
  -> conv3x3.  RRDB = 3 residual dense blocks (5 convs, growth ``gc``, LeakyReLU 0.2, residual scale 0.2),
  RRDB output scaled by 0.2 plus its input.  As in NRP there is no long skip and no skip from the input to
  the output: the network outputs the image itself.  JATP uses the same network with nb = 3 (paper, 4.1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The paper-sized networks (computed parameter counts in docs/REFERENCE-IMPLEMENTATIONS.md):
HGD_PAPER = {"enc_channels": (64, 128, 256, 256, 256), "enc_blocks": (2, 3, 3, 3, 3),
             "dec_channels": (256, 256, 128, 64), "dec_blocks": (3, 3, 3, 2)}          # ~11.03M params
NRP_PAPER = {"nf": 64, "nb": 23, "gc": 32}                                                # 16,550,275 params
JATP_PAPER = {"nf": 64, "nb": 3, "gc": 32}                                                # 2,161,795 params


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNetDenoiser(nn.Module):
    """HGD's denoising U-Net: output = x + D(x) (the network predicts the negative of the adversarial noise)."""

    def __init__(self, in_channels: int = 1, enc_channels=(16, 32, 64), enc_blocks=(2, 2, 2),
                 dec_channels=(32, 16), dec_blocks=(2, 2)):
        super().__init__()
        if len(dec_channels) != len(enc_channels) - 1 or len(dec_blocks) != len(dec_channels):
            raise ValueError("the decoder needs one stage per encoder stage but the last")
        self.encoder = nn.ModuleList()
        cin = in_channels
        for i, (c, n) in enumerate(zip(enc_channels, enc_blocks)):
            layers = [_block(cin, c, stride=2 if i > 0 else 1)] + [_block(c, c) for _ in range(n - 1)]
            self.encoder.append(nn.Sequential(*layers))
            cin = c
        self.decoder = nn.ModuleList()
        skips = list(enc_channels[:-1])[::-1]
        for c, n, skip in zip(dec_channels, dec_blocks, skips):
            layers = [_block(cin + skip, c)] + [_block(c, c) for _ in range(n - 1)]
            self.decoder.append(nn.Sequential(*layers))
            cin = c
        self.head = nn.Conv2d(cin, in_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, h = [], x
        for stage in self.encoder:
            h = stage(h)
            feats.append(h)
        for stage, skip in zip(self.decoder, feats[:-1][::-1]):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = stage(torch.cat([h, skip], 1))
        return x + self.head(h)


class ResidualDenseBlock(nn.Module):
    """ESRGAN's residual dense block: 5 densely connected convs (growth gc), LeakyReLU 0.2, output*0.2 + x."""

    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(nf + i * gc, gc, 3, 1, 1) for i in range(4)] +
                                   [nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)])
        self.act = nn.LeakyReLU(0.2, inplace=True)
        for conv in self.convs:  # ESRGAN initialisation: kaiming, scaled by 0.1
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs[:-1]:
            feats.append(self.act(conv(torch.cat(feats, 1))))
        return self.convs[-1](torch.cat(feats, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: 3 RDBs, output*0.2 + x."""

    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.rdbs = nn.Sequential(*[ResidualDenseBlock(nf, gc) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdbs(x) * 0.2 + x


class RRDBNet(nn.Module):
    """NRP's purifier: conv3x3(c -> nf) -> nb x RRDB -> conv3x3(nf -> c); outputs the image directly."""

    def __init__(self, in_channels: int = 1, nf: int = 16, nb: int = 3, gc: int = 8):
        super().__init__()
        self.conv_first = nn.Conv2d(in_channels, nf, 3, 1, 1)
        self.trunk = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.conv_last = nn.Conv2d(nf, in_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.trunk(self.conv_first(x)))


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())

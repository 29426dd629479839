"""MedFusion's fusion network (2-D, batched; volumes are fused slice by slice).

:class:`GainFusionNet` is an end-to-end unsupervised fusion network in the family of DenseFuse
(Li & Wu, "DenseFuse: a fusion approach to infrared and visible images", IEEE TIP 28(5),
2019: a densely connected encoder shared by both sources, a fusion rule, a decoder) and IFCNN
(Zhang et al., "IFCNN: a general image fusion framework based on convolutional neural
network", Information Fusion 54, 2020). It is designed for medical pairs and kept fast, well
under 50 ms per 256x256 pair on two CPU threads (Docs/models.md):

- the encoder (shared weights) sees each source alone;
- the fusion rule is learned and per pixel: soft weights from both feature maps pick which
  source's features lead, plus a learned mixture of the two;
- the decoder predicts, per pixel, a gain for each source and a detail residual, and the
  output is ``max(g_A A, g_B B) + d``: the pixel maximum, made selective by the gains;
- every layer runs at half resolution on 2x2 pixel blocks (pixel unshuffle in, pixel shuffle
  out: the sub-pixel layout of Shi et al., "Real-time single image and video
  super-resolution using an efficient sub-pixel convolutional neural network", CVPR 2016),
  so gains and detail are still predicted for every full-resolution pixel while the network
  touches a quarter of the positions.

It is trained to keep both sources' visual information (:mod:`MedFusionLib.cnn.losses`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (torch's convention)
from torch import nn


def _conv(inputs: int, outputs: int) -> nn.Conv2d:
    return nn.Conv2d(inputs, outputs, 3, padding=1)  # zero padding: the background of scans is dark


class GainFusionNet(nn.Module):
    """Dense encoder, per-pixel learned fusion rule, and a decoder of per-pixel source gains.

    ``F = max(g_A A, g_B B) + d`` with ``g`` in ``[0, max_gain]`` and a detail residual ``d``.
    The maximum is the pixel rule the field's metrics favour and the one that keeps both
    sources' brightest structures; the learned gains make it selective and contrast-aware:
    above one they raise a source where the other would mask it (a PET focus inside bright
    MR tissue), near zero they drop a source where it is flat and would only veil the other
    (CT's uniform brain tissue over MR's gyri). On the validation pairs this form kept the
    weaker source's VIF at 0.27-0.40 where a weighted sum ``g_A A + g_B B + d`` of the same
    network kept 0.16-0.27 (Docs/models.md).

    Args:
        width: channels of the first encoder layer.
        growth: channels each dense layer adds (two dense layers).
        hidden: channels of the first decoder layer (the second has half).
        shuffle: side of the pixel blocks the layers work on (1: full resolution).
        max_gain: the largest gain a source can get.

    Example:
        >>> net = GainFusionNet()
        >>> a = b = torch.rand(1, 1, 32, 32)
        >>> net(a, b).shape
        torch.Size([1, 1, 32, 32])
    """

    def __init__(
        self, *, width: int = 16, growth: int = 8, hidden: int = 16, shuffle: int = 2, max_gain: float = 2.0
    ) -> None:
        super().__init__()
        self.width, self.growth, self.hidden, self.shuffle = width, growth, hidden, shuffle
        self.max_gain = max_gain
        features = width + 2 * growth
        self.stem = _conv(shuffle * shuffle, width)
        self.dense1 = _conv(width, growth)
        self.dense2 = _conv(width + growth, growth)
        self.rule = _conv(2 * features, 2)
        self.mix = nn.Conv2d(2 * features, features, 1)
        self.decode1 = _conv(features, hidden)
        self.decode2 = _conv(hidden, hidden // 2)
        # Drawn and discarded: the head of the network this one grew from (a blend weight and a
        # detail per pixel block). Its draw from torch's generator keeps the initial weights,
        # and so `medfusion train`, identical to those of the shipped weights' training run.
        _conv(hidden // 2, 2 * shuffle * shuffle)
        self.head = _conv(hidden // 2, 3 * shuffle * shuffle)  # gain A, gain B, detail
        self.act = nn.LeakyReLU(0.1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense features of one source: ``(N, 1, H, W)`` to ``(N, width + 2 growth, H, W)``."""
        stem = self.act(self.stem(F.pixel_unshuffle(x, self.shuffle) if self.shuffle > 1 else x))
        first = self.act(self.dense1(stem))
        second = self.act(self.dense2(torch.cat([stem, first], 1)))
        return torch.cat([stem, first, second], 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Fuse ``(N, 1, H, W)`` images in ``[0, 1]``; returns the same shape (not clamped)."""
        height, width = a.shape[-2:]
        pad = (0, -width % self.shuffle, 0, -height % self.shuffle)
        a, b = F.pad(a, pad, mode="replicate"), F.pad(b, pad, mode="replicate")
        fa, fb = self.encode(a), self.encode(b)
        both = torch.cat([fa, fb], 1)
        weights = torch.softmax(self.rule(both), dim=1)
        fused = weights[:, :1] * fa + weights[:, 1:] * fb + self.mix(both)
        hidden = self.act(self.decode2(self.act(self.decode1(fused))))
        out = self.head(hidden)
        if self.shuffle > 1:
            out = F.pixel_shuffle(out, self.shuffle)
        gain_a = self.max_gain * torch.sigmoid(out[:, :1])
        gain_b = self.max_gain * torch.sigmoid(out[:, 1:2])
        return (torch.maximum(gain_a * a, gain_b * b) + out[:, 2:])[..., :height, :width]

    def config(self) -> dict[str, int | float]:
        """The constructor's arguments (stored beside the weights)."""
        return {
            "width": self.width,
            "growth": self.growth,
            "hidden": self.hidden,
            "shuffle": self.shuffle,
            "max_gain": self.max_gain,
        }

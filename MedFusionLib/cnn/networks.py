"""The project's fusion networks (2-D, batched; volumes are fused slice by slice).

:class:`DenseFusionNet` is an end-to-end unsupervised fusion network in the family of
DenseFuse (Li & Wu, "DenseFuse: a fusion approach to infrared and visible images", IEEE TIP
28(5), 2019: a densely connected encoder shared by both sources, a fusion rule, a decoder)
and IFCNN (Zhang et al., "IFCNN: a general image fusion framework based on convolutional
neural network", Information Fusion 54, 2020), trained without ground truth by structure,
intensity and gradient losses as in U2Fusion (Xu et al., IEEE TPAMI 44(1), 2022). It is
designed for medical pairs and kept fast, well under 50 ms per 256x256 pair on two CPU
threads (Docs/models.md):

- the encoder (shared weights) sees each source alone, so either input slot takes MR, CT,
  PET or SPECT;
- the fusion rule is learned and per pixel: soft weights from both feature maps pick which
  source's features lead (anatomical detail from MR or CT, intensity from PET or SPECT),
  plus a learned mixture of the two;
- the decoder predicts a per-pixel blend of the two *input images* and a detail residual,
  so that the output stays in the sources' intensity range and ``fuse(X, X)`` is close to X;
- every layer runs at half resolution on 2x2 pixel blocks (pixel unshuffle in, pixel shuffle
  out: the sub-pixel layout of Shi et al., "Real-time single image and video
  super-resolution using an efficient sub-pixel convolutional neural network", CVPR 2016),
  so the blend weight and the detail are still predicted for every full-resolution pixel
  while the network touches a quarter of the positions: on two CPU threads this made it
  several times faster than the same network at full resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (torch's convention)
from torch import nn


def _conv(inputs: int, outputs: int) -> nn.Conv2d:
    return nn.Conv2d(inputs, outputs, 3, padding=1)  # zero padding: the background of scans is dark


class DenseFusionNet(nn.Module):
    """Dense encoder, per-pixel learned fusion rule, blend-and-detail decoder.

    Args:
        width: channels of the first encoder layer.
        growth: channels each dense layer adds (two dense layers).
        hidden: channels of the first decoder layer (the second has half).
        shuffle: side of the pixel blocks the layers work on (1: full resolution).

    Example:
        >>> net = DenseFusionNet()
        >>> a = b = torch.rand(1, 1, 32, 32)
        >>> net(a, b).shape
        torch.Size([1, 1, 32, 32])
    """

    def __init__(self, *, width: int = 16, growth: int = 8, hidden: int = 16, shuffle: int = 2) -> None:
        super().__init__()
        self.width, self.growth, self.hidden, self.shuffle = width, growth, hidden, shuffle
        features = width + 2 * growth
        self.stem = _conv(shuffle * shuffle, width)
        self.dense1 = _conv(width, growth)
        self.dense2 = _conv(width + growth, growth)
        self.rule = _conv(2 * features, 2)
        self.mix = nn.Conv2d(2 * features, features, 1)
        self.decode1 = _conv(features, hidden)
        self.decode2 = _conv(hidden, hidden // 2)
        self.head = _conv(hidden // 2, 2 * shuffle * shuffle)  # blend logit, detail residual
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
        alpha = torch.sigmoid(out[:, :1])
        return (alpha * a + (1 - alpha) * b + out[:, 1:])[..., :height, :width]

    def config(self) -> dict[str, int]:
        """The constructor's arguments (stored beside the weights)."""
        return {"width": self.width, "growth": self.growth, "hidden": self.hidden, "shuffle": self.shuffle}


class SiameseFocusNet(nn.Module):
    """The Siamese patch classifier of Liu et al.'s CNN fusion, as a fully convolutional net.

    Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional
    neural network", Information Fusion 36:191-207, 2017: two weight-sharing branches (two
    3x3 convolutions, 2x2 max pooling, a 3x3 convolution) see one 16x16 patch each; their
    features, concatenated, go through a fully connected layer to two classes ("the first
    patch is the clearer one" or not). Liu, Chen, Cheng, Peng, "A medical image fusion method
    based on convolutional neural networks", ICIF 2017, uses its output as the weight map of
    a medical fusion. Channels here are a quarter of the paper's (16, 32, 64; the paper's
    64, 128, 256), and a 1x1 convolution narrows each branch to 16 channels before the fully
    connected layer (written as an 8x8 convolution), so that a 256x256 pair is scored densely
    at stride 2 in about a tenth of a second on two CPU threads.
    """

    patch = 16

    def __init__(self, *, channels: int = 16, hidden: int = 32) -> None:
        super().__init__()
        self.channels, self.hidden = channels, hidden
        self.branch = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * channels, 4 * channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4 * channels, channels, 1),
            nn.ReLU(),
        )
        self.fully_connected = nn.Conv2d(2 * channels, hidden, self.patch // 2)
        self.classes = nn.Conv2d(hidden, 2, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Class logits: ``(N, 2, 1, 1)`` for 16x16 patches, a stride-2 map for larger images."""
        both = torch.cat([self.branch(a), self.branch(b)], 1)
        return self.classes(torch.relu(self.fully_connected(both)))

    def config(self) -> dict[str, int]:
        return {"channels": self.channels, "hidden": self.hidden}

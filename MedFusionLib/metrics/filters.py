"""Batched float64 torch helpers the metrics share.

Tensors are ``(N, *spatial)``: axis 0 is a batch of independent images (or slices, or one
volume), every other axis is spatial. Reductions return one value per batch item. Nothing
here warns on degenerate data: divisions by zero give NaN or inf, which the metrics map
to their documented values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

GREY_LEVELS = 256


def spatial_dims(x: torch.Tensor) -> tuple[int, ...]:
    """The spatial axes of a batched tensor (all but the first)."""
    return tuple(range(1, x.ndim))


def batch_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over the spatial axes, one value per batch item."""
    return x.flatten(1).mean(dim=1)


def batch_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the spatial axes, one value per batch item."""
    return x.flatten(1).sum(dim=1)


def correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of ``x`` and ``y`` per batch item (NaN when either is constant)."""
    xc = x.flatten(1) - x.flatten(1).mean(dim=1, keepdim=True)
    yc = y.flatten(1) - y.flatten(1).mean(dim=1, keepdim=True)
    return (xc * yc).sum(dim=1) / torch.sqrt((xc * xc).sum(dim=1) * (yc * yc).sum(dim=1))


TILED_MIN_VOXELS = 1 << 20  # above this, window filters run tile by tile (see valid_tiles)


def _correlate_direct(x: torch.Tensor, weights: Sequence[float], dims: Sequence[int]) -> torch.Tensor:
    width = len(weights)
    for dim in dims:
        length = x.shape[dim] - width + 1
        out = x.narrow(dim, 0, length) * weights[0]
        for offset in range(1, width):
            out.add_(x.narrow(dim, offset, length), alpha=weights[offset])
        x = out
    return x


def _tiled(
    x: torch.Tensor, width: int, dims: Sequence[int], compute: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Apply a 'valid' ``width``-wide window computation over all spatial axes tile by tile,
    so that its temporaries stay in cache; small inputs go through in one piece."""
    if tuple(dims) != spatial_dims(x) or x[0].numel() < TILED_MIN_VOXELS:
        return compute(x)
    out_shape = [s - width + 1 for s in x.shape[1:]]
    out = x.new_empty([x.shape[0], *out_shape])
    for block, tile in zip(output_blocks(x, out_shape), valid_tiles(x, width), strict=True):
        out[block] = compute(x[tile])
    return out


def correlate_valid(x: torch.Tensor, kernel: Sequence[float], dims: Sequence[int]) -> torch.Tensor:
    """Correlate with a 1-D kernel along each axis in ``dims``, keeping only full windows.

    A separable kernel applied this way equals SciPy's ``convolve2d(x, rot90(w, 2),
    mode='valid')`` for the outer-product window ``w`` (and its 3-D analogue).
    """
    weights = [float(w) for w in kernel]
    return _tiled(x, len(weights), dims, lambda tile: _correlate_direct(tile, weights, dims))


def box_mean_valid(x: torch.Tensor, width: int, dims: Sequence[int]) -> torch.Tensor:
    """Mean over ``width``-wide windows along ``dims`` (full windows only), from exact window sums."""
    count = float(width ** len(dims))
    return _tiled(x, width, dims, lambda tile: box_sum_valid(tile, width, dims).div_(count))


def gaussian_window_1d(width: int, sigma: float) -> list[float]:
    """The 1-D factor of MATLAB's ``fspecial('gaussian', width, sigma)`` (sums to one).

    The 2-D/3-D window is the outer product of this with itself; MATLAB's zeroing of taps
    below ``eps * max`` never applies for the widths and sigmas the metrics use.
    """
    half = (width - 1) / 2.0
    values = [math.exp(-((i - half) ** 2) / (2.0 * sigma * sigma)) for i in range(width)]
    total = sum(values)
    return [v / total for v in values]


def convolve_same_zero(x: torch.Tensor, kernel: Sequence[float], dim: int) -> torch.Tensor:
    """Convolve (flipped kernel) along one axis with zero padding, output the input's size.

    Matches ``scipy.signal.convolve2d(..., mode='same')`` for an odd-length kernel.
    """
    weights = [float(w) for w in reversed(kernel)]
    radius = len(weights) // 2
    shape = list(x.shape)
    shape[dim] = radius
    zeros = x.new_zeros(shape)
    padded = torch.cat((zeros, x, zeros), dim=dim)
    length = x.shape[dim]
    out = None
    for offset, weight in enumerate(weights):
        if weight != 0.0:
            term = padded.narrow(dim, offset, length)
            out = term * weight if out is None else out.add_(term, alpha=weight)
    return out if out is not None else torch.zeros_like(x)


def sobel_gradients(x: torch.Tensor) -> list[torch.Tensor]:
    """Sobel derivatives along each spatial axis (zero padding, same size).

    For 2-D batches the first entry is the derivative along rows (the vertical Sobel,
    ``[[1, 2, 1], [0, 0, 0], [-1, -2, -1]]`` convolved) and the second along columns
    (``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]`` convolved), as in Xydeas & Petrovic's metric.
    In 3-D each derivative is smoothed with ``[1, 2, 1]`` along the two other axes.
    """
    dims = spatial_dims(x)
    derivatives = []
    for dim in dims:
        derivative = (1.0, 0.0, -1.0) if len(dims) == 2 and dim == 1 else (-1.0, 0.0, 1.0)
        g = convolve_same_zero(x, derivative, dim)
        for other in dims:
            if other != dim:
                g = convolve_same_zero(g, (1.0, 2.0, 1.0), other)
        derivatives.append(g)
    return derivatives


def grey_levels(x: torch.Tensor) -> torch.Tensor:
    """Integer grey levels 0-255 (round half to even, then clip) as int64."""
    return x.round().clamp_(0, GREY_LEVELS - 1).to(torch.int64)


def joint_histogram(x: torch.Tensor, y: torch.Tensor, bins: int = GREY_LEVELS) -> torch.Tensor:
    """Joint probability table ``(N, bins, bins)`` of two integer label tensors in ``[0, bins)``."""
    n = x.shape[0]
    flat = (
        torch.arange(n, device=x.device).view(n, 1) * (bins * bins) + x.flatten(1) * bins + y.flatten(1)
    ).flatten()
    counts = torch.bincount(flat, minlength=n * bins * bins).view(n, bins, bins).to(torch.float64)
    return counts / counts.sum(dim=(1, 2), keepdim=True)


def histogram(x: torch.Tensor, bins: int = GREY_LEVELS) -> torch.Tensor:
    """Probability table ``(N, bins)`` of an integer label tensor in ``[0, bins)``."""
    n = x.shape[0]
    flat = (torch.arange(n, device=x.device).view(n, 1) * bins + x.flatten(1)).flatten()
    counts = torch.bincount(flat, minlength=n * bins).view(n, bins).to(torch.float64)
    return counts / counts.sum(dim=1, keepdim=True)


def entropy(p: torch.Tensor, *, base: float = 2.0) -> torch.Tensor:
    """Shannon entropy of probability tables over all but the first axis (``0 log 0 = 0``)."""
    flat = p.flatten(1)
    terms = torch.where(flat > 0, flat * torch.log(torch.where(flat > 0, flat, 1.0)), 0.0)
    return -terms.sum(dim=1) / math.log(base)


def mutual_information(joint: torch.Tensor) -> torch.Tensor:
    """Mutual information in nats of joint tables ``(N, bins, bins)``."""
    px = joint.sum(dim=2, keepdim=True)
    py = joint.sum(dim=1, keepdim=True)
    outer = px * py
    positive = joint > 0
    ratio = torch.where(positive, joint, 1.0) / torch.where(positive, outer, 1.0)
    return torch.where(positive, joint * torch.log(ratio), 0.0).flatten(1).sum(dim=1)


def downsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Keep every ``factor``-th sample along each spatial axis (from the first)."""
    index = (slice(None),) + (slice(None, None, factor),) * (x.ndim - 1)
    return x[index]


def fft_frequencies(spatial: Sequence[int]) -> list[torch.Tensor]:
    """Signed frequencies, in cycles per axis extent, of the DFT bins along each axis of ``spatial``.

    One float64 1-D tensor per axis, ``0, 1, ..., -1`` (``fftfreq(n) * n``: the Nyquist bin
    of an even axis is ``-n/2``, as in MATLAB's ``freqspace`` after ``ifftshift``).
    """
    return [torch.fft.fftfreq(n, d=1.0 / n).to(torch.float64) for n in spatial]


def block_sums(x: torch.Tensor, size: int) -> torch.Tensor:
    """Sums over non-overlapping ``size``-wide blocks along every spatial axis, ``(N, *blocks)``.

    Blocks start at index 0; an axis whose length is not a multiple of ``size`` ends in a
    partial block summing the samples it has (the tail is zero-padded).
    """
    spatial = x.shape[1:]
    pads: list[int] = []
    for n in reversed(spatial):
        pads += [0, -n % size]
    if any(pads):
        x = torch.nn.functional.pad(x, pads)
    shape = [x.shape[0]]
    for n in x.shape[1:]:
        shape += [n // size, size]
    return x.reshape(shape).sum(dim=tuple(range(2, 2 * len(spatial) + 1, 2)))


# --- Helpers added for the information and structural metric families -----------------------------

TILE_ELEMENTS = 1 << 17
"""About how many window outputs one tile of :func:`valid_tiles` yields (1 MiB in float64)."""


def output_blocks(x: torch.Tensor, window_extent: Sequence[int]) -> list[tuple[slice, ...]]:
    """Blocks that partition an output grid of spatial extent ``window_extent`` (batch ``x.shape[0]``)
    along its first one or two axes, each with about :data:`TILE_ELEMENTS` outputs.

    Returns index tuples ``(slice(None), rows, cols)`` (``(slice(None), rows)`` for 1-D),
    square-ish in the first two axes unless whole rows fit, in row-major order.
    """
    windows = list(window_extent)
    if len(windows) < 2:
        rows = max(1, TILE_ELEMENTS // max(1, x.shape[0]))
        return [(slice(None), slice(r, min(windows[0], r + rows))) for r in range(0, windows[0], rows)]
    per_cell = max(1, x.shape[0] * math.prod(windows[2:]))
    side = max(1, math.isqrt(max(1, TILE_ELEMENTS // per_cell)))
    cols = min(windows[1], side)
    rows = side if cols < windows[1] else max(1, TILE_ELEMENTS // (per_cell * cols))
    return [
        (slice(None), slice(r, min(windows[0], r + rows)), slice(c, min(windows[1], c + cols)))
        for r in range(0, windows[0], rows)
        for c in range(0, windows[1], cols)
    ]


def valid_tiles(x: torch.Tensor, width: int) -> list[tuple[slice, ...]]:
    """Index tuples that cut ``x`` into overlapping tiles for a streamed ``width``-wide 'valid'
    window computation over its first one or two spatial axes.

    ``x[index]`` is a tile whose full windows are a block of :func:`output_blocks` of the full
    windows of ``x``; the blocks of all tiles partition them, in row-major order. Tiles hold
    about :data:`TILE_ELEMENTS` window outputs (batch included), so a computation's
    temporaries stay small enough to remain in cache and in reused memory: a 256x256 image is
    one tile, a 256^3 volume 144. Empty when ``x`` is narrower than ``width``.
    """
    spatial = x.shape[1:]
    if min(spatial) < width:
        return []
    blocks = output_blocks(x, [s - width + 1 for s in spatial])
    return [(block[0],) + tuple(slice(s.start, s.stop + width - 1) for s in block[1:]) for block in blocks]


def box_sum_valid(x: torch.Tensor, width: int, dims: Sequence[int]) -> torch.Tensor:
    """Sum over ``width``-wide windows along ``dims`` (full windows only), by direct summation.

    Each axis builds sums of 2, 4, 8 ... neighbours by doubling and adds the pieces that make
    up ``width`` (7 = 4 + 2 + 1: four operations instead of six). Unlike running sums
    (:func:`box_mean_valid`) the result has no cancellation error: it is exact for
    integer-valued data (below 2**53), so flat windows of 8-bit images have exactly zero
    variance, and otherwise within a few ulps of the window's own magnitude.
    """
    for dim in dims:
        length = x.shape[dim] - width + 1
        partial = {1: x}
        size = 1
        while size * 2 <= width:
            previous = partial[size]
            count = previous.shape[dim] - size
            partial[2 * size] = previous.narrow(dim, 0, count) + previous.narrow(dim, size, count)
            size *= 2
        pieces = []
        offset = 0
        for size in sorted(partial, reverse=True):
            if width & size:
                pieces.append(partial[size].narrow(dim, offset, length))
                offset += size
        out = pieces[0] + pieces[1] if len(pieces) > 1 else pieces[0]
        for piece in pieces[2:]:
            out.add_(piece)
        x = out
    return x


def _smooth_valid(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``[1, 2, 1]`` along ``dim``, full windows only."""
    length = x.shape[dim] - 2
    out = x.narrow(dim, 0, length) + x.narrow(dim, 2, length)
    return out.add_(x.narrow(dim, 1, length), alpha=2.0)


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude ``sqrt(sum_k g_k**2)`` of :func:`sobel_gradients` (zero padding).

    Equal to the magnitude of :func:`sobel_gradients` (exactly for integer-valued data, to
    rounding otherwise; the derivatives' signs do not matter), computed tile by tile
    (:func:`output_blocks`) from a one-sample halo, zero-padded only at the array's borders,
    with 'valid' passes: a fraction of the helper's full-size padded temporaries.
    """
    dims = spatial_dims(x)
    out = torch.empty_like(x)
    for block in output_blocks(x, x.shape[1:]):
        index = [slice(None)]
        pad: list[int] = []
        for axis, part in enumerate(block[1:], start=1):
            low, high = max(0, part.start - 1), min(x.shape[axis], part.stop + 1)
            index.append(slice(low, high))
            pad = [1 - (part.start - low), 1 - (high - part.stop)] + pad
        tile = x[tuple(index)]
        pad = [1, 1] * (len(dims) - len(block) + 1) + pad
        padded = torch.nn.functional.pad(tile, pad) if any(pad) else tile
        energy = None
        for dim in dims:
            g = padded
            for other in dims:
                if other == dim:
                    length = g.shape[dim] - 2
                    g = g.narrow(dim, 2, length) - g.narrow(dim, 0, length)
                else:
                    g = _smooth_valid(g, other)
            energy = g.square_() if energy is None else energy.addcmul_(g, g)
        out[block] = energy.sqrt_()
    return out


def haar_detail_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Magnitude of the first-level orthonormal Haar detail coefficients, at half resolution.

    For each 2x2 (2-D) or 2x2x2 (3-D) block the detail subbands (3 or 7 of them) hold all
    of the block's energy but its mean, so ``sqrt(sum_d c_d**2) = sqrt(sum x**2 - (sum x)**2 / n)``
    over the block's ``n`` samples (Parseval), whatever the subbands' orientation convention
    (exact for integer-valued data). An odd-length axis is first extended by repeating its last
    sample, as PyWavelets' ``'symmetric'`` mode does for Haar, so the output has ``ceil(len / 2)``
    samples per axis and equals ``sqrt(cH**2 + cV**2 + cD**2)`` of ``pywt.dwt2(x, 'haar')`` in
    2-D (and the root of the seven detail subbands' energy of ``pywt.dwtn`` in 3-D). Computed
    tile by tile (:func:`output_blocks`).
    """
    dims = spatial_dims(x)
    half = [-(-x.shape[d] // 2) for d in dims]
    out = torch.empty((x.shape[0], *half), dtype=x.dtype, device=x.device)
    for block in output_blocks(out, half):
        index = (slice(None),) + tuple(slice(2 * s.start, 2 * s.stop) for s in block[1:])
        tile = x[index]
        total = tile
        energy = None
        for dim in reversed(dims):
            if total.shape[dim] % 2:  # only at the array's far border: repeat the last sample
                total = torch.cat((total, total.narrow(dim, total.shape[dim] - 1, 1)), dim=dim)
                if energy is not None:
                    energy = torch.cat((energy, energy.narrow(dim, energy.shape[dim] - 1, 1)), dim=dim)
            pairs = total.unflatten(dim, (total.shape[dim] // 2, 2))
            first, second = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)
            if energy is None:
                energy = first * first
                energy.addcmul_(second, second)
            else:
                pairs = energy.unflatten(dim, (energy.shape[dim] // 2, 2))
                energy = pairs.select(dim + 1, 0) + pairs.select(dim + 1, 1)
            total = first + second
        out[block] = energy.sub_(total.square_().div_(2 ** len(dims))).clamp_(min=0.0).sqrt_()
    return out

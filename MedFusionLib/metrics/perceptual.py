"""Perceptual fusion metrics from human visual system models: Chen-Blum ``Q_CB``, Chen-Varshney ``Q_CV``.

Both filter with a contrast sensitivity function (CSF) in the frequency domain and weight
the two sources by a saliency. Inputs are float64 ``(N, *spatial)`` batches of grey levels
on the 0-255 scale with 2 or 3 spatial axes; every batch item is scored on its own.

Conventions shared by both metrics
----------------------------------
* The grey levels are used as given. Z. Liu's MATLAB toolbox (``metricChenBlum.m``,
  ``metricChen.m``, reused by the VIFB and MEFB benchmarks) first stretches every image on
  its own to ``round(255 (x - min) / (max - min))``; that step is in neither paper and is
  not applied here (the inputs already are on the 0-255 scale).
* CSF filtering multiplies the discrete Fourier transform of the whole image (periodic
  boundaries, like the toolbox's ``fft2`` filtering). Spatial frequency is counted per axis
  in cycles per axis extent, ``k``, and converted to cycles per degree as ``k / theta``:
  each axis extent is taken to subtend ``theta`` degrees of visual angle. These are the
  viewing settings hard-coded in the toolbox: its ``freqspace`` grids are scaled by
  ``size/30`` in ``metricChenBlum.m`` (``theta = 15``) and by ``size/8``, its "length 3"
  setting, in ``metricChen.m`` (``theta = 4``). The CSF is a function of the radial
  frequency ``r = sqrt(sum_i (k_i / theta)^2)`` over the 2 or 3 spatial axes; in 3-D that is
  the isotropic CSF of the 3-D spatial frequency.
* Two real results come out of one complex transform pair as its real and imaginary parts
  (``Q_CB``: one image under two filters; ``Q_CV``: two differences under one filter),
  which halves the number of inverse FFTs.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import torch

from .filters import block_sums, fft_frequencies, gaussian_window_1d, spatial_dims
from .registry import register_metric

# Chen-Blum: contrast sensitivity (difference of Gaussians), viewing setting, Peli's filters, masking.
CB_DOG_F0 = 15.3870
CB_DOG_F1 = 1.3456
CB_DOG_A = 0.7622
CB_VIEW_DEGREES = 15.0
CB_SIGMAS = (2.0, 4.0)
CB_GAUSSIAN_WIDTH = 31
CB_T, CB_H, CB_Z = 1.0, 1.0, 1e-4  # and the exponents p = 3, q = 2, written out in _cb_masked_contrast

# Chen-Varshney: Mannos-Sakrison CSF, viewing setting, regions, saliency exponent.
CV_MANNOS_SAKRISON = (2.6, 0.0192, 0.114, 1.1)
CV_VIEW_DEGREES = 4.0
CV_BLOCK = 16
CV_ALPHA = 1.0

# Local means at or below this fraction of the image's largest grey level (about 500 times
# the float64 round-off of the FFT filtering) count as zero: no contrast there. Contrasts
# up to _CONTRAST_FLOOR are round-off as well (a constant image) and are set to zero.
_DENOMINATOR_TOL = 1e-13
_CONTRAST_FLOOR = 1e-9
_TINY = 1e-300
# Elements per chunk of the pixel-wise stages: 2 MiB temporaries, which stay in cache.
_CHUNK = 1 << 18
# Transfer functions of grids up to this many samples (512 x 512) are cached, a few per metric.
_CACHE_LIMIT = 1 << 18


def _outer_head(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Outer product of all but the last of the per-axis vectors, with a trailing axis of length 1."""
    ndim = len(vectors)
    head = vectors[0].reshape((-1,) + (1,) * (ndim - 1))
    for axis, vector in enumerate(vectors[1:-1], start=1):
        shape = [1] * ndim
        shape[axis] = -1
        head = head * vector.reshape(shape)
    return head


def _outer(vectors: Sequence[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """The outer product of 1-D tensors, one per axis (at least two): a separable transfer function."""
    head = _outer_head(vectors)
    return head * vectors[-1] if out is None else torch.mul(head, vectors[-1], out=out)


def _cached_transfer(
    build: Callable[[tuple[int, ...], torch.device], torch.Tensor],
) -> Callable[[Sequence[int], torch.device], torch.Tensor]:
    """Memoise a transfer-function builder for small grids (images); volumes are rebuilt each call.

    The cached tensors are shared: callers only read them.
    """
    cached = functools.lru_cache(maxsize=4)(build)

    def get(spatial: Sequence[int], device: torch.device) -> torch.Tensor:
        key = tuple(int(n) for n in spatial)
        return cached(key, device) if math.prod(key) <= _CACHE_LIMIT else build(key, device)

    return get


def _chunks(length: int, rows: int) -> Iterator[slice]:
    """Column slices of a ``(rows, length)`` array holding about ``_CHUNK`` elements each."""
    step = max(1, _CHUNK // max(rows, 1))
    for start in range(0, length, step):
        yield slice(start, min(length, start + step))


def _rowdot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of two ``(N, M)`` tensors."""
    return torch.bmm(x.unsqueeze(1), y.unsqueeze(2)).view(-1)


def _full_spectrum(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``torch.fft.fftn`` of the real batch ``x`` over its spatial axes, written into the complex ``out``.

    Computed as ``rfftn`` (about a third of the time of a full transform of real data) and
    completed by Hermitian symmetry, ``X[-k] = conj(X[k])``.
    """
    dims = spatial_dims(x)
    half = torch.fft.rfftn(x, dim=dims)
    kept = half.shape[-1]
    out[..., :kept].copy_(half)
    rest = x.shape[-1] - kept
    if rest > 0:
        # bins kept + j of the last axis are conj(X[-k_1, ..., -k_{d-1}, rest - j]); flipping every
        # spatial axis of bins 1..rest gives that up to a shift by one along the other axes.
        mirrored = half[..., 1 : rest + 1].flip(dims).conj()
        tail = out[..., kept:]
        for wrapped in itertools.product((False, True), repeat=len(dims) - 1):
            target: list[slice] = [slice(None)]
            source: list[slice] = [slice(None)]
            for is_zero, n in zip(wrapped, x.shape[1:-1], strict=True):
                target.append(slice(0, 1) if is_zero else slice(1, n))
                source.append(slice(n - 1, n) if is_zero else slice(0, n - 1))
            tail[tuple(target)].copy_(mirrored[tuple(source)])
    return out


def _gaussian_transfer(n: int, k: torch.Tensor, sigma: float) -> torch.Tensor:
    """Periodic length-``n`` DFT of the unit-sum ``CB_GAUSSIAN_WIDTH``-tap Gaussian at frequencies ``k``."""
    taps = torch.tensor(gaussian_window_1d(CB_GAUSSIAN_WIDTH, sigma), dtype=torch.float64, device=k.device)
    offsets = (
        torch.arange(CB_GAUSSIAN_WIDTH, dtype=torch.float64, device=k.device) - (CB_GAUSSIAN_WIDTH - 1) / 2
    )
    return (taps * torch.cos((2.0 * math.pi / n) * k[:, None] * offsets)).sum(dim=1)


@_cached_transfer
def _cb_transfers(spatial: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The filters of ``Q_CB`` on the full DFT grid, packed as one complex tensor ``(H1 - H2) + 1j H2``.

    ``H1`` (``H2``) is the DoG CSF times the transfer function of Peli's Gaussian of ``sigma``
    2 (4). Both are real and even, so filtering a real image ``I`` by the packed tensor gives
    the numerator ``G1*I - G2*I`` of Peli's contrast as the real part and its denominator
    ``G2*I`` as the imaginary part (the difference is formed in the frequency domain, free
    of cancellation). The DoG ``exp(-(r/f0)^2) - a exp(-(r/f1)^2)`` of the radial frequency
    is separable term by term over the axes, as are the Gaussians: each filter is a
    difference of two outer products.
    """
    frequencies = [k.to(device) for k in fft_frequencies(spatial)]
    centre = [torch.exp(-((k / (CB_VIEW_DEGREES * CB_DOG_F0)) ** 2)) for k in frequencies]
    surround = [torch.exp(-((k / (CB_VIEW_DEGREES * CB_DOG_F1)) ** 2)) for k in frequencies]
    packed = torch.empty(spatial, dtype=torch.complex128, device=device)
    parts = torch.view_as_real(packed)
    for index, sigma in zip((1, 0), reversed(CB_SIGMAS), strict=True):  # H2 first, then H1 - H2
        gauss = [_gaussian_transfer(n, k, sigma) for n, k in zip(spatial, frequencies, strict=True)]
        target = parts[..., index]
        _outer([g * c for g, c in zip(gauss, centre, strict=True)], out=target)
        terms = [g * s for g, s in zip(gauss, surround, strict=True)]
        target.addcmul_(_outer_head(terms), terms[-1], value=-CB_DOG_A)
    parts[..., 0].sub_(parts[..., 1])
    return packed


def _cb_masked_contrast(x: torch.Tensor, transfers: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
    """Masked contrast response ``C'`` of a batch ``(N, *spatial)``, flattened to ``(N, M)``.

    ``G1*I - G2*I`` and ``G2*I`` (``I`` the CSF-filtered image) come out of one complex
    transform pair as its real and imaginary parts. Peli's band-limited contrast
    ``C = |G1*I / G2*I - 1| = |G1*I - G2*I| / |G2*I|`` is zero where ``|G2*I|`` is at most
    ``_DENOMINATOR_TOL`` of the image's largest absolute grey level, and where it is at most
    ``_CONTRAST_FLOOR``; then ``C' = t C^3 / (h C^2 + Z)``. ``work`` is a complex128 buffer of
    the shape of ``x``, overwritten.
    """
    dims = spatial_dims(x)
    z = _full_spectrum(x, work)
    z.mul_(transfers)
    torch.fft.ifftn(z, dim=dims, out=z)
    both = torch.view_as_real(z.flatten(1))
    flat = x.flatten(1)
    tol = _DENOMINATOR_TOL * torch.maximum(flat.amax(dim=1, keepdim=True), -flat.amin(dim=1, keepdim=True))
    rows, length = both.shape[:2]
    response = torch.empty((rows, length), dtype=torch.float64, device=x.device)
    for cols in _chunks(length, rows):
        c = torch.abs(both[:, cols, 0], out=response[:, cols])
        mean = both[:, cols, 1].abs()
        c.div_(mean.masked_fill_(mean <= tol, math.inf))
        torch.nn.functional.threshold_(c, _CONTRAST_FLOOR, 0.0)
        c2 = c * c
        if CB_H != 1.0:
            c2.mul_(CB_H)
        c.mul_(c2).div_(c2.add_(CB_Z))
        if CB_T != 1.0:
            c.mul_(CB_T)
    return response


def _loss(cx: torch.Tensor, cf: torch.Tensor) -> torch.Tensor:
    """``1 - Q_XF`` for ``Q_XF = min(C'_X, C'_F) / max(C'_X, C'_F)``, i.e. ``|C'_X - C'_F| / max``; 0 where
    both are zero."""
    high = torch.maximum(cx, cf).clamp_(min=_TINY)
    return torch.sub(cx, cf).abs_().div_(high)


@register_metric(
    "Q_CB",
    citation=(
        "Y. Chen, R. S. Blum, 'A new automated quality assessment algorithm for image fusion', "
        "Image and Vision Computing 27(10):1421-1432, 2009"
    ),
    summary=(
        "Chen-Blum perceptual quality: DoG contrast sensitivity filter (each axis spanning 15 degrees, "
        "as Z. Liu's toolbox), Peli contrast with Gaussians of sigma 2 and 4, masking t=h=1, p=3, q=2, "
        "Z=1e-4, mean of lambda_A Q_AF + lambda_B Q_BF; parts are the lambda-weighted means of Q_AF, Q_BF"
    ),
    undefined_when=(
        "Q_CB_A (Q_CB_B) when the saliency lambda_A (lambda_B) is zero at every pixel: A (B) shows no "
        "contrast anywhere while the other source shows contrast everywhere; Q_CB itself is always defined"
    ),
)
def q_cb(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> dict[str, torch.Tensor]:
    """Chen-Blum perceptual fusion quality ``Q_CB``, 0-1, higher is better.

    Y. Chen and R. S. Blum, "A new automated quality assessment algorithm for image fusion",
    Image and Vision Computing 27(10):1421-1432, 2009.

    1. Contrast sensitivity filtering: each image's spectrum is multiplied by the
       difference-of-Gaussians CSF ``S(r) = exp(-(r/f0)^2) - a exp(-(r/f1)^2)`` with
       ``f0 = 15.3870``, ``f1 = 1.3456``, ``a = 0.7622`` (the paper's DoG filter, after
       Watson and Ahumada; the paper also evaluates Mannos-Sakrison and Barten CSFs, and the
       DoG is the one Z. Liu's ``metricChenBlum.m`` uses). ``r`` is in cycles per degree,
       each axis extent spanning 15 degrees (the toolbox's ``size/30`` ``freqspace`` scaling).
    2. Local contrast, Peli's band-limited contrast at one level: ``C = G1*I / G2*I - 1`` with
       Gaussian low-passes of ``sigma`` 2 and 4 on the toolbox's 31-tap support, normalised
       to unit sum, taken as ``|C|`` as in the toolbox.
    3. Masked contrast response ``C' = t C^p / (h C^q + Z)`` with ``t = h = 1``, ``p = 3``,
       ``q = 2``, ``Z = 1e-4``.
    4. Preservation ``Q_AF = C'_A / C'_F`` where ``C'_A < C'_F``, else ``C'_F / C'_A`` (1 where
       both are zero); saliency ``lambda_A = C'_A^2 / (C'_A^2 + C'_B^2)`` (1/2 where both are
       zero) and ``lambda_B = 1 - lambda_A``.
    5. ``Q_CB = mean(lambda_A Q_AF + lambda_B Q_BF)``. The parts are the saliency-weighted
       means ``Q_CB_A = sum(lambda_A Q_AF) / sum(lambda_A)`` and ``Q_CB_B`` likewise (not in
       the paper); ``Q_CB`` lies between them.

    Numerics and deviations from the toolbox: no per-image stretch (module docstring); the
    Gaussians are applied in the frequency domain with the periodic boundary of the CSF
    step (the toolbox zero-pads there, so values differ within 15 pixels of the border) and
    sum to one (the toolbox's sum to 0.9998 for ``sigma`` 4, a 2e-4 offset in ``C``).
    ``C`` is set to zero where ``|G2*I|`` is at most ``1e-13`` of the image's largest grey
    level, below which it is FFT round-off (the toolbox divides anyway and gets NaN or
    noise), and where ``C <= 1e-9`` (round-off, e.g. a constant image). Beware that the
    CSF-filtered image stays tiny but nonzero far into an exactly black background, where
    Peli's ratio of two tiny numbers is well defined but visually meaningless; ``Q_CB``
    includes those pixels, as the paper's mean and the toolbox do. On the Harvard PET and
    SPECT slices, whose backgrounds are large and black, this matters: counting local means
    below a quarter grey level as contrast-free would raise ``Q_CB`` of the MRI/PET pair 11
    average from 0.73 to 0.91. In 3-D the CSF is the same function of the 3-D radial
    frequency and the Gaussians are 3-D Gaussians.
    """
    transfers = _cb_transfers(f.shape[1:], f.device)
    work = torch.empty(f.shape, dtype=torch.complex128, device=f.device)
    ca = _cb_masked_contrast(a, transfers, work)
    cb = _cb_masked_contrast(b, transfers, work)
    cf = _cb_masked_contrast(f, transfers, work)
    del transfers, work
    rows, length = cf.shape
    # Accumulate the losses 1 - Q_XF, so that perfect preservation scores exactly 1. _TINY
    # makes lambda_A = 1/2 and Q_XF = 1 where both contrasts are zero and changes nothing
    # elsewhere (nonzero C' exceed 1e-23).
    lam_a_sum = torch.zeros(rows, dtype=torch.float64, device=f.device)
    loss_a = torch.zeros_like(lam_a_sum)
    loss_b = torch.zeros_like(lam_a_sum)
    loss_b_lam_a = torch.zeros_like(lam_a_sum)
    for cols in _chunks(length, rows):
        a_part, b_part, f_part = ca[:, cols], cb[:, cols], cf[:, cols]
        lam_a = a_part.square().add_(_TINY)
        lam_a.div_(torch.addcmul(lam_a, b_part, b_part).add_(_TINY))
        lost_b = _loss(b_part, f_part)
        lam_a_sum += lam_a.sum(dim=1)
        loss_a += _rowdot(lam_a, _loss(a_part, f_part))
        loss_b += lost_b.sum(dim=1)
        loss_b_lam_a += _rowdot(lam_a, lost_b)
    loss_b -= loss_b_lam_a  # lambda_B = 1 - lambda_A
    return {
        "Q_CB": 1.0 - (loss_a + loss_b) / length,
        "Q_CB_A": 1.0 - loss_a / lam_a_sum,
        "Q_CB_B": 1.0 - loss_b / (length - lam_a_sum),
    }


@_cached_transfer
def _mannos_sakrison(spatial: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Mannos-Sakrison CSF ``2.6 (0.0192 + 0.114 r) exp(-(0.114 r)^1.1)`` on the full DFT grid.

    ``r^2 = sum_i k_i^2 / theta^2`` with integer ``k_i``, so the CSF is tabulated once per
    value of ``sum_i k_i^2`` and gathered.
    """
    gain, offset, scale, power = CV_MANNOS_SAKRISON
    squares = [k.to(device=device, dtype=torch.int64).square() for k in fft_frequencies(spatial)]
    index = squares[0].reshape((-1,) + (1,) * (len(spatial) - 1))
    for axis, sq in enumerate(squares[1:], start=1):
        shape = [1] * len(spatial)
        shape[axis] = -1
        index = index + sq.reshape(shape)
    top = int(sum(int(sq.max()) for sq in squares))
    r = torch.arange(top + 1, dtype=torch.float64, device=device).sqrt_().mul_(scale / CV_VIEW_DEGREES)
    table = gain * (offset + r) * torch.exp(-r.pow(power))
    return table[index]


def _pair(x: torch.Tensor, dim: int, subtract: bool) -> torch.Tensor:
    """``x[i+1] + x[i]`` (or ``x[i+1] - x[i]``) along ``dim``: one sample shorter."""
    n = x.shape[dim]
    head, tail = x.narrow(dim, 1, n - 1), x.narrow(dim, 0, n - 1)
    return head - tail if subtract else head + tail


def _sobel_magnitude_padded(padded: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the interior of an image padded by one sample on every spatial axis.

    The Sobel derivative along an axis is ``[-1, 0, 1]`` along it and ``[1, 2, 1]`` along the
    others (:func:`filters.sobel_gradients`); both factor through ``[1, 1]``
    (``[1, 2, 1] = [1, 1] * [1, 1]``, ``[-1, 0, 1] = [1, 1] * [-1, 1]``), so the image is first
    summed pairwise along every axis and the rest is shared between the derivatives: one
    add or subtract per pass, 15 passes in 3-D.
    """
    dims = spatial_dims(padded)
    summed = padded
    for dim in dims:
        summed = _pair(summed, dim, subtract=False)
    smoothed: dict[tuple[int, ...], torch.Tensor] = {(): summed}
    total = None
    for dim in dims:
        key: tuple[int, ...] = ()
        for other in sorted((d for d in dims if d != dim), reverse=True):
            parent, key = key, key + (other,)
            if key not in smoothed:
                smoothed[key] = _pair(smoothed[parent], other, subtract=False)
        g = _pair(smoothed[key], dim, subtract=True)
        total = g.square_() if total is None else total.addcmul_(g, g)
    assert total is not None
    return total.sqrt_()


def _sobel_block_sums(x: torch.Tensor, size: int, alpha: float) -> torch.Tensor:
    """Sums of the Sobel gradient magnitude (zero padding) to the power ``alpha`` over the blocks of
    :func:`filters.block_sums`.

    Computed in slabs of whole blocks along the first spatial axis, each read with a
    one-sample halo (zeros at the image border), so that no full-size gradient image is held.
    """
    first = x.shape[1]
    per_row = x[:, :1].numel()
    step = size * max(1, _CHUNK // max(per_row * size, 1))
    parts = []
    for start in range(0, first, step):
        stop = min(first, start + step)
        lo, hi = max(start - 1, 0), min(stop + 1, first)
        pad = [1, 1] * (x.ndim - 2) + [lo - (start - 1), (stop + 1) - hi]
        magnitude = _sobel_magnitude_padded(torch.nn.functional.pad(x[:, lo:hi], pad))
        if alpha != 1.0:
            magnitude.pow_(alpha)
        parts.append(block_sums(magnitude, size))
    return torch.cat(parts, dim=1)


def _block_counts(spatial: Sequence[int], size: int, device: torch.device) -> torch.Tensor:
    """Number of samples in each block of :func:`filters.block_sums` (smaller blocks at the ends)."""
    counts = []
    for n in spatial:
        full, rest = divmod(n, size)
        counts.append(
            torch.tensor(
                [float(size)] * full + ([float(rest)] if rest else []), dtype=torch.float64, device=device
            )
        )
    return _outer(counts).unsqueeze(0)


@register_metric(
    "Q_CV",
    citation=(
        "H. Chen, P. K. Varshney, 'A human perception inspired quality metric for image fusion based "
        "on regional information', Information Fusion 8(2):193-207, 2007"
    ),
    summary=(
        "Chen-Varshney perceptual distortion: saliency = sum of Sobel magnitudes (alpha=1) per 16x16 "
        "(16x16x16) region, distance = regional mean of the squared Mannos-Sakrison-filtered difference "
        "(each axis spanning 4 degrees, as Z. Liu's toolbox); saliency-weighted mean over regions and sources"
    ),
    higher_is_better=False,
    undefined_when=(
        "Q_CV when neither source has any Sobel edge (both identically zero); Q_CV_A (Q_CV_B) when A (B) "
        "is identically zero"
    ),
)
def q_cv(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> dict[str, torch.Tensor]:
    """Chen-Varshney perceptual fusion distortion ``Q_CV``, >= 0, lower is better.

    H. Chen and P. K. Varshney, "A human perception inspired quality metric for image fusion
    based on regional information", Information Fusion 8(2):193-207, 2007.

    1. Edge strength ``G_X``: Sobel gradient magnitude (3x3 Sobel with zero padding, as the
       toolbox's ``filter2``; in 3-D the 3x3x3 Sobel of :func:`filters.sobel_gradients`).
    2. Regions ``w``: non-overlapping 16x16 blocks (16x16x16 in 3-D) from the first sample.
       An axis whose length is not a multiple of 16 ends in a smaller block, which is kept,
       its sums and means taken over its own samples (the toolbox's ``blkproc`` zero-pads it
       to 16, which dilutes its mean).
    3. Saliency ``lambda_X(w) = sum_w G_X^alpha`` with ``alpha = 1`` (the toolbox's
       ``metricChen.m`` hard-codes ``alpha = 5``).
    4. Regional distance ``D_XF(w) = mean_w (S * (X - F))^2``, ``S`` the Mannos-Sakrison CSF
       ``2.6 (0.0192 + 0.114 r) exp(-(0.114 r)^1.1)`` (J. L. Mannos, D. J. Sakrison, IEEE
       Trans. Inf. Theory 20(4):525-536, 1974; the toolbox writes 0.144 for both 0.114)
       multiplying the spectrum, ``r`` in cycles per degree with each axis extent spanning
       4 degrees (the toolbox's ``size/8`` ``freqspace`` scaling).
    5. ``Q_CV = sum_w (lambda_A D_AF + lambda_B D_BF) / sum_w (lambda_A + lambda_B)``; the parts
       are ``Q_CV_A = sum_w lambda_A D_AF / sum_w lambda_A`` and ``Q_CV_B`` likewise.

    Values are in squared grey levels (0-255 scale), typically tens to thousands for 8-bit
    images; 0 when ``F`` equals both sources. No per-image stretch (module docstring). In 3-D
    the CSF is the same function of the 3-D radial frequency.
    """
    dims = spatial_dims(f)
    spatial = f.shape[1:]
    lam_a = _sobel_block_sums(a, CV_BLOCK, CV_ALPHA).flatten(1)
    lam_b = _sobel_block_sums(b, CV_BLOCK, CV_ALPHA).flatten(1)
    # A - F in the real part, B - F in the imaginary part: one transform pair filters both.
    diff = torch.empty(f.shape, dtype=torch.complex128, device=f.device)
    parts = torch.view_as_real(diff)
    torch.sub(a, f, out=parts[..., 0])
    torch.sub(b, f, out=parts[..., 1])
    same = [[torch.equal(x[i], f[i]) for i in range(f.shape[0])] for x in (a, b)]
    torch.fft.fftn(diff, dim=dims, out=diff)
    parts.mul_(_mannos_sakrison(spatial, f.device).unsqueeze(-1))
    torch.fft.ifftn(diff, dim=dims, out=diff)
    parts.square_()
    for channel, flags in enumerate(same):
        for i, flag in enumerate(flags):
            if flag:  # exactly zero, not the other channel's round-off
                parts[i, ..., channel] = 0.0
    counts = _block_counts(spatial, CV_BLOCK, f.device)
    d_a = (block_sums(parts[..., 0], CV_BLOCK) / counts).flatten(1)
    d_b = (block_sums(parts[..., 1], CV_BLOCK) / counts).flatten(1)
    del diff, parts
    weighted_a = _rowdot(lam_a, d_a)
    weighted_b = _rowdot(lam_b, d_b)
    saliency_a = lam_a.sum(dim=1)
    saliency_b = lam_b.sum(dim=1)
    return {
        "Q_CV": (weighted_a + weighted_b) / (saliency_a + saliency_b),
        "Q_CV_A": weighted_a / saliency_a,
        "Q_CV_B": weighted_b / saliency_b,
    }

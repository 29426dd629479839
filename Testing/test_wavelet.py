"""Wavelet family: torch DWT/SWT against PyWavelets, and the ``dwt`` / ``swt`` fusion methods."""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import pywt
import SimpleITK as sitk
import torch
from PIL import Image

from MedFusionLib.errors import ParameterError
from MedFusionLib.fusion import fuse_arrays, fuse_tensors, get_method
from MedFusionLib.fusion.runner import slab_bounds
from MedFusionLib.fusion.wavelet import (
    DISCRETE_WAVELETS,
    _UndecimatedFusion,
    effective_levels,
    filter_bank,
    iswtn_torch,
    swt_levels,
    swtn_torch,
    wavedecn_torch,
    waverecn_torch,
)

WAVELETS = ("haar", "db2", "db4", "sym4", "coif1", "bior2.2", "rbio1.3")
METHODS = ("dwt", "swt")


# ----------------------------------------------------------------------------- data


def _luminance(path: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0


@pytest.fixture(scope="module")
def pair2d(data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Harvard MRI/PET pair 11 as gray luminance in [0, 1] (256 x 256)."""
    folder = data_dir / "harvard" / "MRI_PET"
    mri = _luminance(folder / "MRI" / "11.png")
    pet = _luminance(folder / "PET" / "11.png")
    return torch.from_numpy(mri), torch.from_numpy(pet)


@pytest.fixture(scope="module")
def pair3d(data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """SPM T1 and PET templates (91 x 109 x 91, one grid), each divided by its maximum."""
    volumes = []
    images = [sitk.ReadImage(str(data_dir / "mni" / f"spm_{name}.nii.gz")) for name in ("T1", "PET")]
    for image in images:
        assert image.GetSize() == images[0].GetSize()
        assert np.allclose(image.GetOrigin(), images[0].GetOrigin())
        assert np.allclose(image.GetSpacing(), images[0].GetSpacing())
        assert np.allclose(image.GetDirection(), images[0].GetDirection())
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        volumes.append(torch.from_numpy(array / array.max()))
    return volumes[0], volumes[1]


@pytest.fixture(scope="module")
def pair3d_crop(pair3d: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A central block of the SPM pair (40 x 92 x 76): slab and influence checks stay fast."""
    block = (slice(25, 65), slice(8, 100), slice(8, 84))
    return pair3d[0][block].contiguous(), pair3d[1][block].contiguous()


def _pair(
    request: pytest.FixtureRequest, dim: int, *, crop: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    name = "pair2d" if dim == 2 else ("pair3d_crop" if crop else "pair3d")
    return request.getfixturevalue(name)


# ----------------------------------------------------------------------------- transforms vs PyWavelets


def _assert_coeffs_equal(got: list, ref: list, tol: float) -> None:
    assert len(got) == len(ref)
    np.testing.assert_allclose(got[0].numpy(), ref[0], rtol=0, atol=tol)
    for mine, theirs in zip(got[1:], ref[1:], strict=True):
        assert list(mine) == sorted(theirs)
        for key, value in theirs.items():
            assert tuple(mine[key].shape) == value.shape, key
            np.testing.assert_allclose(mine[key].numpy(), value, rtol=0, atol=tol)


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize(
    ("shape", "level"),
    [((37, 29), 1), ((37, 29), 3), ((64, 51), 2), ((17, 23, 13), 2), ((12, 15, 20), 1)],
)
def test_wavedecn_matches_pywt(wavelet: str, shape: tuple[int, ...], level: int) -> None:
    x = np.random.default_rng(sum(shape) + level).random(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # level above dwt_max_level on purpose
        ref = pywt.wavedecn(x, wavelet, mode="symmetric", level=level)
        ref_rec = pywt.waverecn(ref, wavelet, mode="symmetric")
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        coeffs = wavedecn_torch(torch.from_numpy(x).to(dtype), wavelet, level)
        _assert_coeffs_equal(coeffs, ref, tol)
        rec = waverecn_torch(coeffs, wavelet)
        assert tuple(rec.shape) == ref_rec.shape
        np.testing.assert_allclose(rec.numpy(), ref_rec, rtol=0, atol=tol)
        cropped = rec[tuple(slice(0, n) for n in shape)]
        np.testing.assert_allclose(cropped.numpy(), x, rtol=0, atol=tol)


def test_wavedecn_default_level_batch_and_long_filters() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((3, 40, 33))
    for wavelet in ("db10", "dmey"):  # filters longer than the signal at the coarse levels
        ref = pywt.wavedecn(x[0], wavelet)
        _assert_coeffs_equal(wavedecn_torch(torch.from_numpy(x[0]), wavelet), ref, 1e-10)
    # leading axes are a batch: each slice transforms on its own
    batched = wavedecn_torch(torch.from_numpy(x), "db2", 2, ndim=2)
    for i in range(3):
        single = [batched[0][i], *({k: v[i] for k, v in d.items()} for d in batched[1:])]
        _assert_coeffs_equal(single, pywt.wavedecn(x[i], "db2", level=2), 1e-10)
    rec = waverecn_torch(batched, "db2", ndim=2)
    np.testing.assert_allclose(rec[:, :40, :33].numpy(), x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize(("shape", "level"), [((32, 24), 3), ((16, 8, 24), 2)])
def test_swtn_matches_pywt(wavelet: str, shape: tuple[int, ...], level: int) -> None:
    x = np.random.default_rng(len(shape) + level).random(shape)
    ref = pywt.swtn(x, wavelet, level=level)
    ref_rec = pywt.iswtn(ref, wavelet)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        coeffs = swtn_torch(torch.from_numpy(x).to(dtype), wavelet, level)
        assert len(coeffs) == len(ref)
        for mine, theirs in zip(coeffs, ref, strict=True):
            assert set(mine) == set(theirs)
            for key, value in theirs.items():
                np.testing.assert_allclose(mine[key].numpy(), value, rtol=0, atol=tol)
        rec = iswtn_torch(coeffs, wavelet)
        np.testing.assert_allclose(rec.numpy(), ref_rec, rtol=0, atol=tol)
        np.testing.assert_allclose(rec.numpy(), x, rtol=0, atol=tol)


def test_every_discrete_wavelet_is_a_perfect_reconstruction_bank() -> None:
    """The SWT fusion relies on rec_lo * dec_lo + rec_hi * dec_hi = 2 delta[n - (L - 1)]."""
    for name in DISCRETE_WAVELETS:
        bank = filter_bank(name)
        total = np.convolve(bank.rec_lo, bank.dec_lo) + np.convolve(bank.rec_hi, bank.dec_hi)
        expected = np.zeros(2 * bank.length - 1)
        expected[bank.length - 1] = 2.0
        tol = 5e-3 if name == "dmey" else 1e-6  # PyWavelets' dmey is an FIR approximation
        np.testing.assert_allclose(total, expected, atol=tol, err_msg=name)


# ----------------------------------------------------------------------------- fusion methods


@pytest.mark.parametrize("name", METHODS)
def test_registered(name: str) -> None:
    method = get_method(name)
    assert method.family == "wavelet"
    assert method.dims == (2, 3)
    params = method.resolve_parameters()
    assert set(params) == {"wavelet", "levels", "window", "consistency"}
    assert method.halo is not None and method.halo(params) > 0
    if name == "dwt":
        assert params == {"wavelet": "db4", "levels": 3, "window": 1, "consistency": True}
        assert method.alignment(params) == 8
    else:
        assert params == {"wavelet": "haar", "levels": 4, "window": 0, "consistency": False}
        assert method.alignment(params) == 1
        assert method.halo(params) <= 2 * 2**4  # filter support * 2**levels


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("bad", ["nope", "morl", "DB4", ""])
def test_unknown_wavelet_is_a_parameter_error(name: str, bad: str) -> None:
    with pytest.raises(ParameterError, match=re.escape(repr(bad))):
        get_method(name).resolve_parameters({"wavelet": bad})
    with pytest.raises(ParameterError, match="wavelet"):
        filter_bank(bad)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("dim", [2, 3])
def test_fusion_properties(request: pytest.FixtureRequest, name: str, dim: int) -> None:
    a, b = _pair(request, dim)
    method = get_method(name)
    params = method.resolve_parameters()
    with torch.no_grad():
        same = method.function(a, a, **params)
        raw = method.function(a, b, **params)
    assert same.shape == a.shape and same.dtype == a.dtype
    assert float((same - a).abs().max()) < 1e-5  # fuse(X, X) == X
    assert raw.shape == a.shape and torch.isfinite(raw).all()
    fused = raw.clamp(0.0, 1.0)  # what the runner returns (checked below on the 3-D crop)
    # both inputs influence the result
    assert float((fused - a).abs().mean()) > 0.01
    assert float((fused - b).abs().mean()) > 0.01


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("dim", [2, 3])
def test_fusion_runner_determinism_and_influence(request: pytest.FixtureRequest, name: str, dim: int) -> None:
    a, b = _pair(request, dim, crop=True)
    method = get_method(name)
    params = method.resolve_parameters()
    fused = fuse_tensors(a, b, method=name)  # the runner clamps to [0, 1]
    assert fused.shape == a.shape and fused.dtype == torch.float32
    assert float(fused.min()) >= 0.0 and float(fused.max()) <= 1.0
    assert torch.equal(fused, fuse_tensors(a, b, method=name))  # deterministic
    assert float((fuse_tensors(a, b * 0.5, method=name) - fused).abs().mean()) > 1e-3
    assert float((fuse_tensors(a * 0.5, b, method=name) - fused).abs().mean()) > 1e-3
    # details come from the image with the stronger detail: A fused with a blank image
    # keeps A's edges (plain averaging would halve them with the approximation)
    with torch.no_grad():
        with_blank = method.function(a, torch.zeros_like(a), **params)
    assert _edge_strength(with_blank) > 1.1 * _edge_strength(0.5 * a)
    if name == "dwt":  # exactly: A's details over half of A's approximation
        coeffs = wavedecn_torch(
            a, params["wavelet"], effective_levels(a.shape, params["wavelet"], params["levels"])
        )
        expected = waverecn_torch([coeffs[0] * 0.5, *coeffs[1:]], params["wavelet"])
        expected = expected[tuple(slice(0, n) for n in a.shape)]
        assert float((with_blank - expected).abs().max()) < 1e-5


def _edge_strength(x: torch.Tensor) -> float:
    return sum(float(torch.diff(x, dim=d).abs().mean()) for d in range(x.ndim))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("dwt", {"levels": 1}),
        ("dwt", {"wavelet": "haar", "levels": 2}),
        ("dwt", {"wavelet": "db2", "levels": 1, "window": 2}),
        ("swt", {}),
        ("swt", {"wavelet": "db2", "levels": 2, "window": 1, "consistency": True}),
        ("swt", {"wavelet": "bior2.2", "levels": 1}),
    ],
)
def test_slab_equivalence(pair3d_crop: tuple[torch.Tensor, torch.Tensor], name: str, params: dict) -> None:
    a, b = (t.numpy() for t in pair3d_crop)
    method = get_method(name)
    resolved = method.resolve_parameters(params)
    plane = a.shape[1] * a.shape[2]
    step = method.alignment(resolved)
    halo = -(-method.halo(resolved) // step) * step
    max_voxels = (3 * halo + step) * plane  # cores of about one halo: a few overlapping slabs
    bounds = slab_bounds(
        a.shape[0],
        plane,
        halo=method.halo(resolved),
        alignment=method.alignment(resolved),
        max_voxels=max_voxels,
    )
    assert len(bounds) > 1 and any(stop - start < a.shape[0] for start, stop, _, _ in bounds)
    whole = fuse_arrays(a, b, method=name, parameters=params, device="cpu")
    slabs = fuse_arrays(a, b, method=name, parameters=params, device="cpu", max_slab_voxels=max_voxels)
    assert float(np.abs(slabs - whole).max()) <= 1e-4


def test_swt_halo_is_tight(pair3d_crop: tuple[torch.Tensor, torch.Tensor]) -> None:
    """One voxel less context than ``halo`` changes the result: the reach is computed exactly."""
    a, b = (t.numpy() for t in pair3d_crop)
    method = get_method("swt")
    params = method.resolve_parameters({"levels": 3})
    halo = method.halo(params)
    plane = a.shape[1] * a.shape[2]
    whole = fuse_arrays(a, b, method=method, parameters=params, device="cpu")
    short = dataclasses.replace(method, halo=lambda p: halo - 1)
    split = fuse_arrays(a, b, method=short, parameters=params, device="cpu", max_slab_voxels=3 * halo * plane)
    assert float(np.abs(split - whole).max()) > 1e-4


@pytest.mark.parametrize("name", METHODS)
def test_identity_for_every_wavelet(name: str) -> None:
    """``fuse(X, X) == X`` for every discrete wavelet (SWT: a sample of short and long ones;
    odd sizes; 3-D for the common ones)."""
    rng = np.random.default_rng(7)
    image = torch.from_numpy(rng.random((21, 18)).astype(np.float32))  # levels clamp to 1 for L > 10
    volume = torch.from_numpy(rng.random((9, 10, 11)).astype(np.float32))
    method = get_method(name)
    wavelets = (
        DISCRETE_WAVELETS if name == "dwt" else (*WAVELETS, "db20", "sym20", "coif17", "bior6.8", "dmey")
    )
    for wavelet in wavelets:
        tol = 5e-3 if wavelet == "dmey" else 1e-5
        for x in (image, volume) if wavelet in WAVELETS else (image,):
            params = method.resolve_parameters({"wavelet": wavelet, "levels": 2 if name == "dwt" else 1})
            with torch.no_grad():
                out = method.function(x, x, **params)
            assert out.shape == x.shape
            assert float((out - x).abs().max()) < tol, wavelet


def test_dwt_levels_are_clamped_for_small_images() -> None:
    rng = np.random.default_rng(3)
    a = torch.from_numpy(rng.random((20, 24)).astype(np.float32))
    b = torch.from_numpy(rng.random((20, 24)).astype(np.float32))
    assert effective_levels(a.shape, "db4", 8) == pywt.dwt_max_level(20, 8) == 1
    assert effective_levels((5, 5), "db4", 3) == 1  # at least one level
    method = get_method("dwt")
    deep = method.function(a, b, **method.resolve_parameters({"levels": 8}))
    shallow = method.function(a, b, **method.resolve_parameters({"levels": 1}))
    assert torch.equal(deep, shallow)
    tiny = torch.rand(3, 4)
    assert method.function(tiny, tiny, **method.resolve_parameters()).shape == (3, 4)


def test_swt_is_shift_invariant() -> None:
    """Undecimated: fusing shifted inputs gives the shifted result away from the borders."""
    rng = np.random.default_rng(5)
    a = torch.from_numpy(rng.random((64, 64)).astype(np.float32))
    b = torch.from_numpy(rng.random((64, 64)).astype(np.float32))
    method = get_method("swt")
    params = method.resolve_parameters({"levels": 2})
    base = method.function(a, b, **params)
    shifted = method.function(torch.roll(a, 3, 0), torch.roll(b, 3, 0), **params)
    core = slice(12, 52)
    assert float((shifted[3:][core] - base[:-3][core]).abs().max()) < 1e-5


def test_swt_levels_are_limited_by_the_last_axis() -> None:
    assert swt_levels((256, 256), "haar", 8) == 8
    assert swt_levels((256, 256), "db4", 8) == 6  # 7 * 2**5 <= 256 < 7 * 2**6
    assert swt_levels((91, 109, 91), "haar", 4) == 4
    assert swt_levels((20, 20), "db20", 8) == 1  # at least one level
    rng = np.random.default_rng(11)
    a = torch.from_numpy(rng.random((20, 24)).astype(np.float32))
    method = get_method("swt")
    params = method.resolve_parameters({"wavelet": "db38", "levels": 8})
    out = method.function(a, a, **params)  # would pad by 19 125 samples without the limit
    assert out.shape == a.shape and float((out - a).abs().max()) < 1e-5


@pytest.mark.parametrize("shape", [(40, 37), (12, 17, 14)])
def test_swt_streamed_and_kept_synthesis_agree(shape: tuple[int, ...]) -> None:
    """Volumes synthesise each level as soon as it is fused, images keep the levels: same result."""
    rng = np.random.default_rng(13)
    a = torch.from_numpy(rng.random(shape).astype(np.float32))
    b = torch.from_numpy(rng.random(shape).astype(np.float32))
    for params in ({"levels": 3}, {"wavelet": "db2", "levels": 2, "window": 1, "consistency": True}):
        resolved = get_method("swt").resolve_parameters(params)
        args = (
            resolved["wavelet"],
            len(shape),
            resolved["levels"],
            resolved["window"],
            resolved["consistency"],
        )
        kept = _UndecimatedFusion(*args, stream=False).fuse(a, b)
        streamed = _UndecimatedFusion(*args, stream=True).fuse(a, b)
        assert float((kept - streamed).abs().max()) < 1e-6


@pytest.mark.parametrize("name", METHODS)
def test_results_do_not_share_reused_buffers(name: str) -> None:
    """Scratch buffers are pooled between calls: an earlier result must stay intact."""
    rng = np.random.default_rng(17)
    a, b, c = (torch.from_numpy(rng.random((48, 40)).astype(np.float32)) for _ in range(3))
    method = get_method(name)
    params = method.resolve_parameters({"levels": 2})
    first = method.function(a, b, **params)
    kept = first.clone()
    second = method.function(c, a, **params)
    assert torch.equal(first, kept)
    assert not torch.equal(first, second)

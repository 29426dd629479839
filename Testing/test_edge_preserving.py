"""Edge-preserving fusion (gff, cbf, jbf_lge) and the filters behind them, on real images."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import harvard_gray, mni_volume

from MedFusionLib.errors import ParameterError
from MedFusionLib.fusion import fuse_arrays, get_method, ops
from MedFusionLib.fusion.edge_preserving import _detail_strength, bilateral_filter, box_mean, guided_filter
from MedFusionLib.fusion.runner import slab_bounds

METHODS = ("gff", "cbf", "jbf_lge")

# Slab tests need a halo well below the depth of the 3-D crop: the defaults where they fit
# (cbf), smaller windows otherwise (gff's default halo is 96 voxels, jbf_lge's 24).
SLAB_CASES = [
    ("gff", {"base_size": 7, "saliency_radius": 2, "r1": 4, "r2": 2}),
    ("cbf", {}),
    ("cbf", {"kernel_size": 5, "window": 3}),
    ("jbf_lge", {"radius": 3, "energy_radius": 2, "consistency_size": 7}),
]


@pytest.fixture(scope="module")
def pair_2d(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Harvard MRI/PET pair 11, BT.601 luminance / 255."""
    assert (data_dir / "harvard" / "MRI_PET" / "PET" / "11.png").is_file()
    return harvard_gray("MRI_PET", "MRI", 11), harvard_gray("MRI_PET", "PET", 11)


@pytest.fixture(scope="module")
def pair_3d(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """SPM T1 and PET (same 91x109x91 grid, each / its max): a 40x20x20 column through the brain.

    Deep enough along axis 0 for the slab tests, thin in-plane so that the 3-D kernels
    (the 11^3 cube of cbf, the radius-5 ball of jbf_lge) stay fast.
    """
    assert (data_dir / "mni" / "spm_PET.nii.gz").is_file()
    crop = (slice(20, 60), slice(45, 65), slice(35, 55))
    return (
        np.ascontiguousarray(mni_volume("spm_T1")[crop]),
        np.ascontiguousarray(mni_volume("spm_PET")[crop]),
    )


def _fuse(a: np.ndarray, b: np.ndarray, name: str, **kwargs: object) -> np.ndarray:
    return fuse_arrays(a, b, method=name, device="cpu", **kwargs)


# --------------------------------------------------------------------------- registry


def test_registered_with_the_papers_defaults() -> None:
    expected = {
        "gff": {
            "base_size": 31,
            "saliency_radius": 5,
            "saliency_sigma": 5.0,
            "r1": 45,
            "eps1": 0.3,
            "r2": 7,
            "eps2": 1e-6,
        },
        "cbf": {"sigma_s": 1.8, "sigma_r": 25.0, "kernel_size": 11, "window": 5},
        "jbf_lge": {
            "sigma_s": 3.0,
            "sigma_r": 0.05,
            "radius": 5,
            "iterations": 1,
            "energy_radius": 4,
            "consistency_size": 21,
        },
    }
    for name, defaults in expected.items():
        spec = get_method(name)
        assert spec.family == "edge_preserving"
        assert spec.dims == (2, 3)
        assert spec.halo is not None
        assert spec.resolve_parameters({}) == defaults
    assert get_method("gff").halo(get_method("gff").resolve_parameters({})) == 96
    assert get_method("cbf").halo(get_method("cbf").resolve_parameters({})) == 7
    assert get_method("jbf_lge").halo(get_method("jbf_lge").resolve_parameters({})) == 24


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("gff", {"base_size": 30}),
        ("cbf", {"kernel_size": 10}),
        ("cbf", {"window": 4}),
        ("jbf_lge", {"consistency_size": 20}),
    ],
)
def test_even_window_sizes_are_refused(
    name: str, params: dict, pair_2d: tuple[np.ndarray, np.ndarray]
) -> None:
    with pytest.raises(ParameterError, match="odd"):
        _fuse(*pair_2d, name, parameters=params)


# --------------------------------------------------------------------------- fusion properties


def _check_properties(a: np.ndarray, b: np.ndarray, name: str, params: dict | None = None) -> np.ndarray:
    fused = _fuse(a, b, name, parameters=params)
    assert fused.shape == a.shape and fused.dtype == np.float32
    assert np.isfinite(fused).all()
    assert fused.min() >= 0.0 and fused.max() <= 1.0
    # the rules make fuse(X, X) == X: equal saliencies / weights / layers
    self_a = _fuse(a, a, name, parameters=params)
    self_b = _fuse(b, b, name, parameters=params)
    np.testing.assert_allclose(self_a, a, atol=1e-4)
    np.testing.assert_allclose(self_b, b, atol=1e-4)
    # both inputs influence the result
    assert np.abs(fused - self_a).mean() > 1e-3
    assert np.abs(fused - self_b).mean() > 1e-3
    return fused


@pytest.mark.parametrize("name", METHODS)
def test_fusion_properties_2d(name: str, pair_2d: tuple[np.ndarray, np.ndarray]) -> None:
    _check_properties(*pair_2d, name)


@pytest.mark.parametrize("name", METHODS)
def test_fusion_properties_3d(name: str, pair_3d: tuple[np.ndarray, np.ndarray]) -> None:
    _check_properties(*pair_3d, name)


@pytest.mark.parametrize("name", METHODS)
def test_deterministic(
    name: str, pair_2d: tuple[np.ndarray, np.ndarray], pair_3d: tuple[np.ndarray, np.ndarray]
) -> None:
    for a, b in (pair_2d, pair_3d):
        np.testing.assert_array_equal(_fuse(a, b, name), _fuse(a, b, name))


@pytest.mark.parametrize(("name", "params"), SLAB_CASES)
def test_slabs_reproduce_the_whole_volume(
    name: str, params: dict, pair_3d: tuple[np.ndarray, np.ndarray]
) -> None:
    a, b = pair_3d
    spec = get_method(name)
    halo = spec.halo(spec.resolve_parameters(params))
    plane = a.shape[1] * a.shape[2]
    max_voxels = plane * (2 * halo + a.shape[0] // 3)  # cores of a third of the depth
    bounds = slab_bounds(a.shape[0], plane, halo=halo, alignment=1, max_voxels=max_voxels)
    assert len(bounds) >= 3
    whole = _fuse(a, b, name, parameters=params)
    slabs = _fuse(a, b, name, parameters=params, max_slab_voxels=max_voxels)
    np.testing.assert_allclose(slabs, whole, atol=1e-4)


def test_swapping_inputs_gives_the_same_fusion(pair_2d: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair_2d
    for name in METHODS:
        agree = np.isclose(_fuse(a, b, name), _fuse(b, a, name), atol=1e-4).mean()
        assert agree > 0.99, name


# --------------------------------------------------------------------------- filters


def test_window_sum_axes_matches_box_filter() -> None:
    x = torch.rand(23, 31, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for radius in (0, 1, 2, 5, 12):
        expected = ops.box_filter(x, radius) * (2 * radius + 1) ** 3
        torch.testing.assert_close(ops.window_sum_axes(x, radius, [0, 1, 2]), expected)
    # a leading batch axis is left alone
    batch = torch.stack((x, 2 * x))
    torch.testing.assert_close(box_mean(batch, 3, batch_dims=1)[1], 2 * ops.box_filter(x, 3))


def _naive_guided(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al. 2013, eqs. (5)-(8), window by window on a reflect-padded 2-D image."""
    h, w = guide.shape
    g = np.pad(guide.astype(np.float64), radius, mode="reflect")
    p = np.pad(src.astype(np.float64), radius, mode="reflect")
    a = np.zeros((h, w))
    b = np.zeros((h, w))
    for i, j in itertools.product(range(h), range(w)):
        wi, wp = (
            g[i : i + 2 * radius + 1, j : j + 2 * radius + 1],
            p[i : i + 2 * radius + 1, j : j + 2 * radius + 1],
        )
        a[i, j] = ((wi * wp).mean() - wi.mean() * wp.mean()) / (wi.var() + eps)
        b[i, j] = wp.mean() - a[i, j] * wi.mean()
    a, b = np.pad(a, radius, mode="reflect"), np.pad(b, radius, mode="reflect")
    out = np.zeros((h, w))
    for i, j in itertools.product(range(h), range(w)):
        out[i, j] = a[i : i + 2 * radius + 1, j : j + 2 * radius + 1].mean() * guide[i, j]
        out[i, j] += b[i : i + 2 * radius + 1, j : j + 2 * radius + 1].mean()
    return out


def test_guided_filter_follows_its_definition(pair_2d: tuple[np.ndarray, np.ndarray]) -> None:
    guide, src = pair_2d[0][100:124, 60:90], pair_2d[1][100:124, 60:90]
    got = guided_filter(torch.from_numpy(guide), torch.from_numpy(src), 3, 1e-3).numpy()
    np.testing.assert_allclose(got, _naive_guided(guide, src, 3, 1e-3), atol=2e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_guided_filter_limits(
    dims: int, pair_2d: tuple[np.ndarray, np.ndarray], pair_3d: tuple[np.ndarray, np.ndarray]
) -> None:
    a, b = (torch.from_numpy(x) for x in (pair_2d if dims == 2 else pair_3d))
    noise = torch.rand(a.shape, generator=torch.Generator().manual_seed(0)) * 1e-2
    image = a + noise  # no flat windows, so var(I) > 0 everywhere
    # eps -> 0 with the image as its own guide: a = 1, b = 0, the input comes back
    torch.testing.assert_close(guided_filter(image, image, 2, 1e-12), image, atol=1e-4, rtol=0)
    # huge eps: a -> 0, b -> mean(p), so the output is the box mean of the box means
    radius = 4
    expected = ops.box_filter(ops.box_filter(b, radius), radius)
    torch.testing.assert_close(guided_filter(image, b, radius, 1e9), expected, atol=1e-5, rtol=0)


def _naive_bilateral(
    src: torch.Tensor, guide: torch.Tensor, radius: int, sigma_s: float, sigma_r: float, ball: bool = False
) -> torch.Tensor:
    """Tomasi & Manduchi's sum over the window, in float64, offset by offset."""
    s = src.double()
    g = guide.double()
    sp, gp = s, g
    for dim in range(s.ndim):
        sp = ops.pad_axis(sp, dim, radius, radius)
        gp = ops.pad_axis(gp, dim, radius, radius)
    num = torch.zeros_like(s)
    den = torch.zeros_like(s)
    for offset in itertools.product(range(-radius, radius + 1), repeat=s.ndim):
        if ball and sum(o * o for o in offset) > radius * radius:
            continue
        view = tuple(slice(radius + o, radius + o + n) for o, n in zip(offset, s.shape, strict=True))
        w = torch.exp(-sum(o * o for o in offset) / (2 * sigma_s**2) - (g - gp[view]) ** 2 / (2 * sigma_r**2))
        num += w * sp[view]
        den += w
    return (num / den).float()


@pytest.mark.parametrize("dims", [2, 3])
def test_bilateral_filter_follows_its_definition(
    dims: int, pair_2d: tuple[np.ndarray, np.ndarray], pair_3d: tuple[np.ndarray, np.ndarray]
) -> None:
    a, b = (torch.from_numpy(x) for x in (pair_2d if dims == 2 else pair_3d))
    crop = (slice(100, 130), slice(80, 120)) if dims == 2 else (slice(10, 22), slice(2, 18), slice(3, 18))
    a, b = a[crop].contiguous(), b[crop].contiguous()
    for radius, sigma_s, sigma_r in ((2, 1.8, 25 / 255), (3, 3.0, 0.05)):
        torch.testing.assert_close(
            bilateral_filter(a, b, radius, sigma_s, sigma_r),
            _naive_bilateral(a, b, radius, sigma_s, sigma_r),
            atol=2e-6,
            rtol=0,
        )
    # the isotropic (ball) window of jbf_lge
    torch.testing.assert_close(
        bilateral_filter(a, b, 3, 3.0, 0.05, ball=True),
        _naive_bilateral(a, b, 3, 3.0, 0.05, ball=True),
        atol=2e-6,
        rtol=0,
    )
    # batched: each channel filtered with its own guide
    both = bilateral_filter(torch.stack((a, b)), torch.stack((b, a)), 2, 1.8, 0.1, batch_dims=1)
    torch.testing.assert_close(both[1], _naive_bilateral(b, a, 2, 1.8, 0.1), atol=2e-6, rtol=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_bilateral_filter_with_huge_sigma_r_is_a_gaussian(
    dims: int, pair_2d: tuple[np.ndarray, np.ndarray], pair_3d: tuple[np.ndarray, np.ndarray]
) -> None:
    a, b = (torch.from_numpy(x) for x in (pair_2d if dims == 2 else pair_3d))
    expected = ops.gaussian_filter(a, 1.8, radius=5)
    torch.testing.assert_close(bilateral_filter(a, b, 5, 1.8, 1e4), expected, atol=1e-5, rtol=0)
    # a flat guide makes every range weight 1 too
    torch.testing.assert_close(
        bilateral_filter(a, torch.zeros_like(a), 5, 1.8, 0.01), expected, atol=1e-5, rtol=0
    )


def test_cbf_weight_is_the_eigenvalue_sum_of_the_two_covariances() -> None:
    detail = torch.randn(20, 24, generator=torch.Generator().manual_seed(3)) * 0.05
    strength = _detail_strength(detail[None], 2, batch_dims=1)[0]
    d = detail.double().numpy()
    for i, j in ((2, 2), (10, 13), (17, 21)):
        x = d[i - 2 : i + 3, j - 2 : j + 3]
        rows_as_observations = np.linalg.eigvalsh(np.cov(x, rowvar=False)).sum()
        columns_as_observations = np.linalg.eigvalsh(np.cov(x, rowvar=True)).sum()
        assert strength[i, j].item() == pytest.approx(
            rows_as_observations + columns_as_observations, rel=1e-4
        )

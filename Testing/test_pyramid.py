"""Pyramid fusion (Laplacian, ratio, gradient, contrast) in 2-D and 3-D on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import harvard_gray, mni_volume

from MedFusionLib.fusion import fuse_arrays, fuse_tensors, get_method
from MedFusionLib.fusion.pyramid import (
    effective_levels,
    expand,
    gradient_directions,
    laplacian_decompose,
    laplacian_reconstruct,
    pyramid_halo,
    reduce,
)

METHODS = ("laplacian_pyramid", "ratio_pyramid", "gradient_pyramid", "contrast_pyramid")


@pytest.fixture(scope="module")
def pair_2d() -> tuple[torch.Tensor, torch.Tensor]:
    """Harvard MRI/PET pair 11, luminance / 255."""
    return (
        torch.from_numpy(harvard_gray("MRI_PET", "MRI", 11)),
        torch.from_numpy(harvard_gray("MRI_PET", "PET", 11)),
    )


@pytest.fixture(scope="module")
def pair_3d() -> tuple[torch.Tensor, torch.Tensor]:
    """SPM T1 and PET templates (one grid), each / max, cropped to the head (fast tests)."""
    crop = (slice(8, 80), slice(10, 98), slice(10, 82))
    return torch.from_numpy(mni_volume("spm_T1")[crop].copy()), torch.from_numpy(
        mni_volume("spm_PET")[crop].copy()
    )


def _pair(request: pytest.FixtureRequest, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return request.getfixturevalue("pair_2d" if ndim == 2 else "pair_3d")


def _fuse(a: torch.Tensor, b: torch.Tensor, name: str, **params: object) -> torch.Tensor:
    return fuse_tensors(a, b, method=name, parameters=params)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Two REDUCE/EXPAND round trips: a strong, detail-free copy."""
    return expand(expand(reduce(reduce(x)), reduce(x).shape), x.shape)


# -- registry --------------------------------------------------------------------------------


def test_registry_entries_carry_the_papers_defaults() -> None:
    defaults = {
        "laplacian_pyramid": {"levels": 4, "rule": "max_abs", "window": 1, "kernel_a": 0.4},
        "ratio_pyramid": {"levels": 4, "offset": 0.01},
        "gradient_pyramid": {"levels": 4, "alpha": 0.85, "window": 1, "exact_reconstruction": True},
        "contrast_pyramid": {"levels": 4, "offset": 0.01},
    }
    authors = {
        "laplacian_pyramid": ("Burt", "1983"),
        "ratio_pyramid": ("Toet", "1989"),
        "gradient_pyramid": ("Kolczynski", "1993"),
        "contrast_pyramid": ("Valeton", "1989"),
    }
    for name in METHODS:
        spec = get_method(name)
        assert spec.family == "multiscale"
        assert set(spec.dims) == {2, 3}
        assert spec.resolve_parameters({}) == defaults[name]
        author, year = authors[name]
        assert author in spec.citation and year in spec.citation
        assert author in (spec.function.__doc__ or "") and year in (spec.function.__doc__ or "")
        assert spec.alignment(spec.resolve_parameters({})) == 16
        assert spec.halo is not None and spec.halo(spec.resolve_parameters({})) >= 16


def test_halo_formula_values() -> None:
    # hand-checked: the start edge needs 2 * reach + 1 per level above a 2-sample-wide top
    assert [pyramid_halo(levels, 0) for levels in (1, 2, 3, 4)] == [4, 11, 23, 47]
    spec = get_method("laplacian_pyramid")
    assert spec.halo(spec.resolve_parameters({"rule": "local_energy", "window": 2})) > spec.halo(
        spec.resolve_parameters({})
    )


# -- the pyramid itself ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(256, 256), (37, 50), (31, 40, 23), (2, 9, 5)])
def test_laplacian_pyramid_reconstructs_perfectly(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    bands, top = laplacian_decompose(x, 6)
    assert len(bands) == effective_levels(shape, 6)
    torch.testing.assert_close(laplacian_reconstruct(bands, top), x, atol=1e-5, rtol=0)


def test_reduce_and_expand_keep_constants_and_sizes() -> None:
    x = torch.full((17, 10, 9), 0.3)
    small = reduce(x)
    assert small.shape == (9, 5, 5)
    torch.testing.assert_close(small, torch.full_like(small, 0.3))
    torch.testing.assert_close(expand(small, x.shape), x)


def test_levels_are_clamped_for_small_images() -> None:
    assert effective_levels((256, 256), 8) == 7  # top keeps 2 x 2
    assert effective_levels((25, 256, 256), 8) == 4  # 25 -> 13 -> 7 -> 4 -> 2
    assert effective_levels((1, 40), 4) == 0
    a = torch.rand(5, 6, generator=torch.Generator().manual_seed(0))
    for name in METHODS:
        fused = _fuse(a, 1 - a, name, levels=8)
        assert fused.shape == a.shape and torch.isfinite(fused).all()


def test_gradient_directions_rebuild_one_minus_w_prime() -> None:
    """-sum_v c_v (second difference along v) == 1 - w' in 2-D (4 filters) and 3-D (13)."""
    for nd, count in ((2, 4), (3, 13)):
        directions = gradient_directions(nd)
        assert len(directions) == count
        kernel = torch.zeros((3,) * nd, dtype=torch.float64)
        centre = (1,) * nd
        for v, c in directions:
            kernel[centre] += 2 * c
            kernel[tuple(1 + s for s in v)] -= c
            kernel[tuple(1 - s for s in v)] -= c
        w1 = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
        w_prime = w1
        for _ in range(nd - 1):
            w_prime = torch.tensordot(w_prime, w1, dims=0)
        expected = -w_prime
        expected[centre] += 1.0
        torch.testing.assert_close(kernel, expected)


# -- properties every method has, 2-D and 3-D ------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", METHODS)
def test_fusing_an_image_with_itself_returns_it(name: str, ndim: int, request: pytest.FixtureRequest) -> None:
    a, b = _pair(request, ndim)
    for x in (a, b):
        raw = get_method(name).function(x, x, **get_method(name).resolve_parameters({}))
        torch.testing.assert_close(raw, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", METHODS)
def test_output_is_valid_and_depends_on_both_inputs(
    name: str, ndim: int, request: pytest.FixtureRequest
) -> None:
    a, b = _pair(request, ndim)
    a0, b0 = a.clone(), b.clone()
    fused = _fuse(a, b, name)
    assert fused.shape == a.shape and fused.dtype == torch.float32
    assert torch.isfinite(fused).all() and fused.min() >= 0 and fused.max() <= 1
    assert torch.equal(a, a0) and torch.equal(b, b0)  # inputs untouched
    # fuse(a, a) == a and fuse(b, b) == b (previous test): the result must differ from both
    assert (fused - a).abs().mean() > 0.01
    assert (fused - b).abs().mean() > 0.01
    # and stay closer to each input than the other input is
    assert (fused - a).abs().mean() < (b - a).abs().mean()
    assert (fused - b).abs().mean() < (b - a).abs().mean()


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", METHODS)
def test_is_deterministic(name: str, ndim: int, request: pytest.FixtureRequest) -> None:
    a, b = _pair(request, ndim)
    assert torch.equal(_fuse(a, b, name), _fuse(a, b, name))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("laplacian_pyramid", {}),
        ("laplacian_pyramid", {"levels": 2, "rule": "local_energy", "window": 2}),
        ("ratio_pyramid", {}),
        ("gradient_pyramid", {}),
        ("gradient_pyramid", {"levels": 2, "exact_reconstruction": False}),
        ("contrast_pyramid", {"levels": 3}),
    ],
)
def test_slabs_equal_the_whole_volume(name: str, params: dict[str, object]) -> None:
    """fuse_arrays in slabs along axis 0 (deepest axis first) equals the unsplit result."""
    a = mni_volume("spm_T1").transpose(1, 0, 2)[:, 12:76, 14:78].copy()  # (109, 64, 64)
    b = mni_volume("spm_PET").transpose(1, 0, 2)[:, 12:76, 14:78].copy()
    whole = fuse_arrays(a, b, method=name, parameters=params, device="cpu", max_slab_voxels=a.size)
    calls: list[int] = []
    split = fuse_arrays(
        a,
        b,
        method=name,
        parameters=params,
        device="cpu",
        max_slab_voxels=20 * 64 * 64,
        progress=lambda done, total: calls.append(total),
    )
    assert calls and calls[0] >= 2  # it really ran in slabs
    np.testing.assert_allclose(split, whole, atol=1e-4, rtol=0)


def test_halo_is_exact_and_tight() -> None:
    """Cut at an aligned plane, a slab is exact from ``halo`` planes on and not one plane before."""
    spec = get_method("laplacian_pyramid")
    params = spec.resolve_parameters({"levels": 3})
    halo = spec.halo(params)
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(96, 12, 12, generator=g), torch.rand(96, 12, 12, generator=g)
    whole = spec.function(a, b, **params)
    lo = 32  # a multiple of 2**levels
    error = (spec.function(a[lo:], b[lo:], **params) - whole[lo:]).abs().amax(dim=(1, 2))
    assert float(error[halo:].max()) == 0.0
    assert float(error[halo - 1]) > 0.0
    assert float(error[: halo // 4].max()) > 1e-2


# -- what each rule is for -------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("rule", ["max_abs", "local_energy"])
def test_laplacian_keeps_the_sharp_image_over_a_blurred_copy(
    rule: str, ndim: int, request: pytest.FixtureRequest
) -> None:
    a, _ = _pair(request, ndim)
    blurred = _blur(a)
    fused = get_method("laplacian_pyramid").function(blurred, a, levels=4, rule=rule, window=1, kernel_a=0.4)

    def fine_detail(x: torch.Tensor) -> float:  # mean |finest Laplacian band|
        return float((x - expand(reduce(x), x.shape)).abs().mean())

    assert fine_detail(fused) > 0.9 * fine_detail(a) > 2.5 * fine_detail(blurred)
    assert (fused - a).abs().mean() < 0.15 * (blurred - a).abs().mean()


@pytest.mark.parametrize("name", ["ratio_pyramid", "contrast_pyramid"])
def test_ratio_rules_keep_luminance_contrast(name: str, pair_2d: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Fusing A with a dimmed copy keeps A's local contrast on the mean luminance: ~0.75 A.

    A Laplacian pyramid keeps A's *differences* instead (A minus a quarter of its base), so
    it fails this check.
    """
    a, _ = pair_2d
    fused = get_method(name).function(a, 0.5 * a, levels=4, offset=1e-4)
    assert (fused - 0.75 * a).abs().mean() < 0.01
    laplacian = get_method("laplacian_pyramid").function(
        a, 0.5 * a, levels=4, rule="max_abs", window=1, kernel_a=0.4
    )
    assert (laplacian - 0.75 * a).abs().mean() > 0.02


def test_ratio_and_contrast_pyramids_agree(pair_2d: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = pair_2d
    torch.testing.assert_close(
        _fuse(a, b, "ratio_pyramid"), _fuse(a, b, "contrast_pyramid"), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("ndim", [2, 3])
def test_gradient_pyramid_averages_matching_patterns_and_selects_otherwise(
    ndim: int, request: pytest.FixtureRequest
) -> None:
    a, _ = _pair(request, ndim)
    spec = get_method("gradient_pyramid")
    # B = 0.8 A matches A everywhere (M = 1.6/1.64 > 0.85): weighted average, close to 0.9 A
    averaged = spec.function(a, 0.8 * a, **spec.resolve_parameters({}))
    assert (averaged - 0.9 * a).abs().mean() < 0.01
    # with alpha at its top (M <= alpha almost everywhere) A's stronger gradients are selected
    selected = spec.function(a, 0.8 * a, **spec.resolve_parameters({"alpha": 0.999}))
    assert (selected - 0.9 * a).abs().mean() > 1.5 * (averaged - 0.9 * a).abs().mean()


def test_gradient_paper_reconstruction_is_close_but_not_exact(
    pair_2d: tuple[torch.Tensor, torch.Tensor],
) -> None:
    a, _ = pair_2d
    spec = get_method("gradient_pyramid")
    approx = spec.function(a, a, **spec.resolve_parameters({"exact_reconstruction": False}))
    error = (approx - a).abs()
    assert 1e-4 < float(error.max()) and float(error.mean()) < 0.02

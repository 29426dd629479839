"""PA-PCNN fusion (Yin et al. 2019): the Otsu threshold, the PCNN, the pyramid and the method."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import harvard_gray, mni_volume

from MedFusionLib.fusion import fuse_arrays, fuse_tensors, get_method, pcnn
from MedFusionLib.fusion.pcnn import (
    _LinkingSum,
    linking_kernel,
    linking_weight_sum,
    nonsubsampled_pyramid,
    otsu_threshold,
    pcnn_firing_counts,
    pcnn_parameters,
)


@pytest.fixture(scope="module")
def pair_2d() -> tuple[torch.Tensor, torch.Tensor]:
    """Harvard MRI/PET pair 11, gray luminance / 255."""
    return (
        torch.from_numpy(harvard_gray("MRI_PET", "MRI", 11)),
        torch.from_numpy(harvard_gray("MRI_PET", "PET", 11)),
    )


@pytest.fixture(scope="module")
def pair_3d() -> tuple[torch.Tensor, torch.Tensor]:
    """SPM T1 and PET templates (same 91x109x91 grid, each / max), a central crop."""
    crop = (slice(25, 57), slice(30, 78), slice(25, 61))
    t1, pet = mni_volume("spm_T1"), mni_volume("spm_PET")
    assert t1.shape == pet.shape
    return torch.from_numpy(t1[crop].copy()), torch.from_numpy(pet[crop].copy())


# --- registry -------------------------------------------------------------------------------


def test_registry_entry_has_the_papers_defaults() -> None:
    spec = get_method("pa_pcnn")
    assert spec.family == "pcnn"
    assert "Yin" in spec.citation and "2019" in spec.citation
    assert spec.halo is None  # global band statistics: runs on the whole volume
    assert set(spec.dims) == {2, 3}
    params = {p.name: p for p in spec.parameters}
    assert set(params) == {"levels", "iterations"}
    assert params["levels"].default == 4
    assert params["iterations"].default == 110
    assert (params["iterations"].min, params["iterations"].max) == (1, 1000)
    assert spec.resolve_parameters({}) == {"levels": 4, "iterations": 110}


# --- Otsu -----------------------------------------------------------------------------------


def test_otsu_threshold_hand_computed_case() -> None:
    # Half the pixels at 0, a quarter at 0.4 (level 102 of 255), a quarter at 1.
    # Split {0} | {0.4, 1}: w0 w1 (mu1 - mu0)^2 = 0.5 * 0.5 * 0.7^2 = 0.1225.
    # Split {0, 0.4} | {1}: 0.75 * 0.25 * (1 - 0.1/0.75)^2 = 0.1408 -> the larger: the threshold
    # is the top level of the first class, 0.4 (the first of the tied levels 102..254).
    x = torch.tensor([0.0] * 8 + [0.4] * 4 + [1.0] * 4).reshape(4, 4)
    assert float(otsu_threshold(x)) == pytest.approx(102 / 255, abs=1e-12)
    # two equal clusters: the first level of the gap is returned
    y = torch.tensor([0.2] * 5 + [0.8] * 5)
    assert float(otsu_threshold(y)) == pytest.approx(round(0.2 * 255) / 255, abs=1e-12)
    # a constant image gives its own level; values outside [0, 1] are clipped
    assert float(otsu_threshold(torch.full((3, 3), 0.6))) == pytest.approx(153 / 255, abs=1e-12)
    assert float(otsu_threshold(torch.tensor([-1.0, 2.0]))) == pytest.approx(0.0, abs=1e-12)


def test_otsu_threshold_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.cat([torch.rand(500, generator=gen) * 0.3, 0.5 + torch.rand(300, generator=gen) * 0.5])
    levels = np.rint(np.clip(x.numpy().astype(np.float64), 0, 1) * 255)
    best, best_k = -1.0, 0
    for k in range(255):
        low, high = levels[levels <= k], levels[levels > k]
        if len(low) == 0 or len(high) == 0:
            continue
        value = len(low) * len(high) / len(levels) ** 2 * (low.mean() - high.mean()) ** 2
        if value > best + 1e-12:
            best, best_k = value, k
    assert float(otsu_threshold(x)) == pytest.approx(best_k / 255, abs=1e-12)
    assert torch.equal(otsu_threshold(x), otsu_threshold(x.clone()))


# --- the PCNN --------------------------------------------------------------------------------


def test_linking_weights_are_the_papers_in_2d_and_inverse_squared_distance_in_3d() -> None:
    expected_2d = torch.tensor([[0.5, 1.0, 0.5], [1.0, 0.0, 1.0], [0.5, 1.0, 0.5]])
    assert torch.equal(linking_kernel(2), expected_2d)
    assert linking_weight_sum(2) == 6.0
    k3 = linking_kernel(3)
    assert torch.equal(k3[1], expected_2d) and torch.equal(k3[:, 1], expected_2d)
    assert float(k3[0, 0, 0]) == pytest.approx(1 / 3)
    assert float(k3.sum()) == pytest.approx(linking_weight_sum(3)) == pytest.approx(44 / 3)


@pytest.mark.parametrize("shape", [(3, 7, 9), (2, 5, 6, 7), (2, 1, 4), (1, 2, 3, 1)])
def test_linking_sum_equals_dense_convolution(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(1)
    y = torch.rand(shape, generator=gen) > 0.5
    ndim = len(shape) - 1
    link = _LinkingSum(shape, y.device)
    got = link(y.view(torch.uint8)).to(torch.float32) / link.scale
    conv = F.conv2d if ndim == 2 else F.conv3d
    expected = conv(y.float()[:, None], linking_kernel(ndim)[None, None], padding=1)[:, 0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_adaptive_parameters_follow_the_paper(pair_2d: tuple[torch.Tensor, torch.Tensor]) -> None:
    s = pair_2d[0][None].clone()
    params = pcnn_parameters(s, 2)
    sigma = float(s.std())
    threshold = float(otsu_threshold(s[0]))
    alpha_f = math.log(1 / sigma)
    lam = (1 / threshold - 1) / 6
    v_e = math.exp(-alpha_f) + 1 + 6 * lam
    alpha_e = math.log(
        v_e
        / (threshold * (1 - math.exp(-3 * alpha_f)) / (1 - math.exp(-alpha_f)) + 6 * lam * math.exp(-alpha_f))
    )
    for name, value in {"alpha_f": alpha_f, "lam": lam, "v_e": v_e, "alpha_e": alpha_e}.items():
        assert float(params[name][0]) == pytest.approx(value, rel=1e-6), name


def _reference_pcnn(
    s: torch.Tensor, iterations: int, alpha_f: float, lam: float, v_e: float, alpha_e: float
) -> torch.Tensor:
    """The paper's equations, literally, for one 2-D input (float64, dense convolution)."""
    s = s.double()
    w = linking_kernel(2).double()[None, None]
    u = torch.zeros_like(s)
    e = torch.zeros_like(s)
    y = torch.zeros_like(s)
    t = torch.zeros_like(s)
    for _ in range(iterations):
        link = F.conv2d(y[None, None], w, padding=1)[0, 0]
        u = math.exp(-alpha_f) * u + s * (1 + lam * link)
        y = (u > e).double()
        e = math.exp(-alpha_e) * e + v_e * y
        t += y
    return t


def test_firing_counts_match_the_papers_equations(pair_2d: tuple[torch.Tensor, torch.Tensor]) -> None:
    # the normalised magnitude of the finest detail band of a PET crop, as the method feeds it
    _, detail = next(nonsubsampled_pyramid(pair_2d[1][None, 100:164, 90:170].clone(), 2))
    s = detail[0].abs()
    s /= s.max()
    params = pcnn_parameters(s[None], 2)
    del params["threshold"]
    counts = pcnn_firing_counts(s[None], 110, **params)[0]
    expected = _reference_pcnn(s, 110, *(float(params[k][0]) for k in ("alpha_f", "lam", "v_e", "alpha_e")))
    # float32 state in units of V_E against float64: a rare neuron could fire a step apart
    agree = (counts.double() == expected).double().mean()
    assert agree > 0.999
    assert (counts.double() - expected).abs().max() <= 1
    assert float(expected.mean()) > 1.0


def test_brighter_constant_input_fires_at_least_as_often(pair_2d: tuple[torch.Tensor, torch.Tensor]) -> None:
    # parameters estimated from a real band, then shared by constant inputs of rising brightness
    s = pair_2d[0][None].clone()
    params = {k: v.expand(20) for k, v in pcnn_parameters(s, 2).items() if k != "threshold"}
    brightness = torch.linspace(0.05, 1.0, 20)
    inputs = brightness[:, None, None].expand(20, 9, 11).contiguous()
    counts = pcnn_firing_counts(inputs, 110, **params).to(torch.int64)
    per_input = counts[:, 4, 5]  # a neuron in the middle of each constant image
    assert (per_input[1:] >= per_input[:-1]).all()
    assert per_input[-1] > per_input[0]
    # every neuron of a constant image fires alike when the borders do not matter (3-D too)
    cube = torch.full((2, 5, 5, 5), 0.7)
    cube[1] = 0.3
    params3 = {k: v[:1].expand(2) for k, v in params.items()}
    counts3 = pcnn_firing_counts(cube, 50, **params3)
    assert int(counts3[0, 2, 2, 2]) >= int(counts3[1, 2, 2, 2]) > 0


def test_zero_input_never_fires() -> None:
    s = torch.zeros(2, 6, 6)
    params = pcnn_parameters(s, 2)
    for value in params.values():
        assert torch.isfinite(value).all()
    del params["threshold"]
    assert int(pcnn_firing_counts(s, 20, **params).sum()) == 0


# --- the pyramid -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 33, 40), (2, 9, 12, 10)])
def test_nonsubsampled_pyramid_reconstructs_exactly(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    total = torch.zeros_like(x)
    sizes = []
    for _, band in nonsubsampled_pyramid(x.clone(), 4):
        sizes.append(band.shape)
        total += band
    assert sizes == [x.shape] * 5  # no decimation: every band has the image's shape
    torch.testing.assert_close(total, x, rtol=0, atol=1e-6)


# --- the method ------------------------------------------------------------------------------


def test_fuses_harvard_pair_at_the_defaults(pair_2d: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = pair_2d
    fused = fuse_tensors(a, b, method="pa_pcnn")
    assert fused.shape == a.shape and fused.dtype == torch.float32
    assert torch.isfinite(fused).all()
    assert float(fused.min()) >= 0.0 and float(fused.max()) <= 1.0
    assert float((fused - a).abs().mean()) > 1e-3  # both inputs influence the result
    assert float((fused - b).abs().mean()) > 1e-3
    # the MRI's edges and the PET's bright uptake both survive
    assert float((fused - a).abs().mean()) < float((b - a).abs().mean())
    assert float((fused - b).abs().mean()) < float((b - a).abs().mean())
    torch.testing.assert_close(fuse_tensors(a, a, method="pa_pcnn"), a, rtol=0, atol=1e-5)
    assert torch.equal(fuse_tensors(a, b, method="pa_pcnn"), fused)  # deterministic
    # A and B play the same role (ties go to the larger magnitude)
    swapped = fuse_tensors(b, a, method="pa_pcnn")
    assert torch.isclose(swapped, fused, atol=1e-4).float().mean() > 0.999


def test_fuses_spm_t1_with_pet_in_3d(pair_3d: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = pair_3d
    params = {"iterations": 30, "levels": 3}
    fused = fuse_tensors(a, b, method="pa_pcnn", parameters=params)
    assert fused.shape == a.shape
    assert torch.isfinite(fused).all()
    assert float(fused.min()) >= 0.0 and float(fused.max()) <= 1.0
    assert float((fused - a).abs().mean()) > 1e-3
    assert float((fused - b).abs().mean()) > 1e-3
    torch.testing.assert_close(fuse_tensors(a, a, method="pa_pcnn", parameters=params), a, rtol=0, atol=1e-5)
    torch.testing.assert_close(fuse_tensors(b, b, method="pa_pcnn", parameters=params), b, rtol=0, atol=1e-5)
    assert torch.equal(fuse_tensors(a, b, method="pa_pcnn", parameters=params), fused)


def test_runner_and_band_grouping_give_the_same_result(
    pair_3d: tuple[torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair_3d
    params = {"iterations": 20, "levels": 2}
    together = fuse_tensors(a, b, method="pa_pcnn", parameters=params)
    via_arrays = fuse_arrays(
        a.numpy(), b.numpy(), method="pa_pcnn", parameters=params, device="cpu", max_slab_voxels=1000
    )
    np.testing.assert_array_equal(via_arrays, together.numpy())  # halo=None: never cut in slabs
    monkeypatch.setattr(pcnn, "_PCNN_BATCH_VOXELS", 1)  # one band at a time through the PCNN
    one_by_one = fuse_tensors(a, b, method="pa_pcnn", parameters=params)
    assert torch.isclose(one_by_one, together, atol=1e-5).float().mean() > 0.999


def test_constant_and_empty_images_pass_through() -> None:
    zero = torch.zeros(16, 20)
    flat = torch.full((16, 20), 0.25)
    params = {"iterations": 10}
    torch.testing.assert_close(fuse_tensors(zero, zero, method="pa_pcnn", parameters=params), zero)
    torch.testing.assert_close(fuse_tensors(flat, flat, method="pa_pcnn", parameters=params), flat)
    out = fuse_tensors(zero, flat, method="pa_pcnn", parameters=params)
    assert torch.isfinite(out).all()

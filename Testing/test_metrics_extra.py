"""Information (FMI, Q_NCIE) and structural (Q_Y, MS_SSIM, Q_E) metrics: registration, reference
values from independent implementations, the F = A and A = B = F orderings, degenerate inputs,
3-D volumes and batching."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import pywt
import SimpleITK as sitk
import torch
from helpers import harvard_path, mni_path

from MedFusionLib.metrics import filters, get_metric, information, structural
from MedFusionLib.metrics.inputs import bt601_luminance

NAMES = ("FMI_pixel", "FMI_gradient", "FMI_wavelet", "Q_NCIE", "Q_Y", "MS_SSIM", "Q_E")
UPPER = {"FMI_pixel": 1.0, "FMI_gradient": 1.0, "FMI_wavelet": 1.0, "Q_NCIE": 1.0, "Q_Y": 1.0, "Q_E": 1.0}


def _gray(pair_set: str, modality: str) -> torch.Tensor:
    """The reference protocol's grey image: round(0.299 R + 0.587 G + 0.114 B) in float64."""
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(harvard_path(pair_set, modality))))
    return torch.from_numpy(np.round(bt601_luminance(rgb))).unsqueeze(0)


@pytest.fixture(scope="module")
def mri_ct(data_dir) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, b = _gray("MRI_CT", "MRI"), _gray("MRI_CT", "CT")
    return a, b, torch.round((a + b) / 2)


@pytest.fixture(scope="module")
def mni(data_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre crops of the SPM T1 and PET templates (one MNI grid), scaled to 0-255."""
    volumes = []
    for name in ("spm_T1", "spm_PET"):
        image = sitk.ReadImage(str(mni_path(name)))
        volumes.append(sitk.GetArrayFromImage(image).astype(np.float64))
    assert volumes[0].shape == volumes[1].shape == (91, 109, 91)
    crop = (slice(25, 65), slice(30, 78), slice(25, 65))
    return tuple(torch.from_numpy(v[crop] / v.max() * 255.0).unsqueeze(0) for v in volumes)


def _run(name: str, a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return get_metric(name).function(a, b, f)


def _values(name: str, a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> tuple[float, float, float]:
    out = _run(name, a, b, f)
    return out[name].item(), out[f"{name}_A"].item(), out[f"{name}_B"].item()


# --- registration and reference values -----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_parts(name, mri_ct):
    metric = get_metric(name)
    assert metric.parts and metric.higher_is_better
    assert metric.keys == (name, f"{name}_A", f"{name}_B")
    assert metric.citation and metric.summary and metric.undefined_when
    a, b, f = (x[:, :64, :64] for x in mri_ct)
    out = _run(name, a, b, f)
    assert set(out) == set(metric.keys)
    for value in out.values():
        assert value.shape == (1,) and value.dtype == torch.float64 and torch.isfinite(value).all()


# Values of the MRI/CT pair 11, F = round((A + B) / 2), from independent implementations:
# pytorch_msssim (with float64 Gaussian taps), scikit-image SSIM maps for Q_Y, a NumPy
# direct-sum Q0 with scipy Sobel for Q_E, scipy rankdata + NumPy histograms for Q_NCIE.
REFERENCE = {
    "MS_SSIM_A": 0.5611671128219405,
    "MS_SSIM_B": 0.7548555717552939,
    "Q_Y": 0.8285761933577326,
    "Q_Y_A": 0.7977767799780923,
    "Q_Y_B": 0.8169018733590836,
    "Q_E": 0.346383461892984,
    "Q_E_A": 0.04039944060552135,
    "Q_E_B": 0.3303322768344818,
    "Q_NCIE": 0.8080481186272265,
    "Q_NCIE_A": 0.2560256196813948,
    "Q_NCIE_B": 0.17854734949074902,
}


def test_reference_values(mri_ct):
    results = {}
    for name in ("MS_SSIM", "Q_Y", "Q_E", "Q_NCIE"):
        results.update(_run(name, *mri_ct))
    for key, expected in REFERENCE.items():
        assert results[key].item() == pytest.approx(expected, rel=1e-10, abs=1e-12), key
    assert results["MS_SSIM"].item() == pytest.approx(
        REFERENCE["MS_SSIM_A"] + REFERENCE["MS_SSIM_B"], rel=1e-10
    )


def test_fmi_matches_a_literal_port_of_fmi_m(mri_ct):
    """Mean window FMI on a 64x64 crop against a loop-by-loop port of fmi.m (with and without the
    clip of the Nelsen mixing weight)."""
    a, b, f = (x[:, 96:160, 96:160] for x in mri_ct)
    assert information.fmi_mean(a, f).item() == pytest.approx(0.45400608476578364, rel=1e-12)
    assert information.fmi_mean(b, f).item() == pytest.approx(0.4162678189407046, rel=1e-12)
    assert information.fmi_mean(a, f, clip=False).item() == pytest.approx(0.4602696550400446, rel=1e-12)


def _fmi_window_literal(s: np.ndarray, f: np.ndarray, clip: bool) -> float:
    """fmi.m's per-window computation with the full l x l joint (columns already in order)."""
    if np.array_equal(s, f):
        return 1.0

    def pdf(x):
        x = np.ones_like(x) if x.max() == x.min() else (x - x.min()) / (x.max() - x.min())
        return x / x.sum()

    ps, pf = pdf(s), pdf(f)
    cs, cf = np.cumsum(ps), np.cumsum(pf)
    ts, tf = ps - ps.mean(), pf - pf.mean()
    cov = (ts * tf).sum()
    c = 0.0 if cov == 0 else cov / np.sqrt((ts * ts).sum() * (tf * tf).sum())
    k = np.arange(1, s.size + 1)
    sd_s = np.sqrt(max((k * k * ps).sum() - (k * ps).sum() ** 2, 0.0))
    sd_f = np.sqrt(max((k * k * pf).sum() - (k * pf).sum() ** 2, 0.0))
    fi, sj = cf[:, None], cs[None, :]
    fim, sjm = np.r_[0.0, cf[:-1]][:, None], np.r_[0.0, cs[:-1]][None, :]
    if c >= 0:
        bound = np.minimum
        cov_bound = (np.minimum(fi, sj) - fi * sj).sum()
    else:

        def bound(x, y):
            return np.maximum(x + y - 1.0, 0.0)

        cov_bound = (np.maximum(fi + sj - 1.0, 0.0) - fi * sj).sum()
    phi = 0.0 if c == 0 or sd_s == 0 or sd_f == 0 else c / (cov_bound / (sd_s * sd_f))
    if clip:
        phi = min(phi, 1.0)
    coupling = bound(fi, sj) - bound(fim, sj) - bound(fi, sjm) + bound(fim, sjm)
    joint = phi * coupling + (1 - phi) * pf[:, None] * ps[None, :]
    nz = joint != 0
    h_joint = -(joint[nz] * np.log(np.abs(joint[nz]))).sum()
    h_s = -(ps[ps > 0] * np.log(ps[ps > 0])).sum()
    h_f = -(pf[pf > 0] * np.log(pf[pf > 0])).sum()
    mutual = h_s + h_f - h_joint
    return 0.0 if mutual == 0 else 2 * mutual / (h_s + h_f)


@pytest.mark.parametrize("length", [9, 27])
@pytest.mark.parametrize("clip", [True, False])
def test_fmi_windows_against_full_joint(length, clip):
    rng = np.random.default_rng(length)
    source = np.round(rng.random((300, length)) * 40)
    fused = np.round(0.6 * source + rng.random((300, length)) * 30)
    fused[:40] = 60 - source[:40]  # negative correlation: the lower Frechet bound
    fused[40:50] = 7.0  # flat windows
    source[50:60] = 3.0
    fused[60:70] = source[60:70]  # identical windows
    source[70:80, : length // 2] = 0.0  # point masses and ties in the cumulative distributions
    expected = [_fmi_window_literal(s, f, clip) for s, f in zip(source, fused, strict=True)]
    got = information.fmi_windows(torch.from_numpy(source), torch.from_numpy(fused), clip=clip)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


# --- orderings and maxima ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_fused_equal_to_a_favours_a(name, mri_ct):
    a, b, f = mri_ct
    total, part_a, part_b = _values(name, a, b, a)
    assert part_a > part_b
    if name == "Q_NCIE":  # NCC(A, A) is A's rank entropy, the largest NCC any F can reach
        assert part_a >= _values(name, a, b, f)[1]
    else:
        assert part_a == pytest.approx(1.0, abs=1e-12)
    assert math.isfinite(total)


@pytest.mark.parametrize("name", NAMES)
def test_identical_inputs_give_the_maximum(name, mri_ct):
    a = mri_ct[0]
    total, part_a, part_b = _values(name, a, a, a)
    if name == "Q_NCIE":  # ties in the background: NCC(A, A) = H_256(A) < 1
        assert part_a == part_b < 1.0 and total < 1.0
        return
    assert part_a == pytest.approx(1.0, abs=1e-12) and part_b == pytest.approx(1.0, abs=1e-12)
    assert total == pytest.approx(2.0 if name == "MS_SSIM" else 1.0, abs=1e-12)


def test_q_ncie_is_one_for_identical_tie_free_images():
    values = torch.from_numpy(np.random.default_rng(0).permutation(4096).reshape(1, 64, 64) * (255 / 4095))
    total, part_a, part_b = _values("Q_NCIE", values, values, values)
    assert total == pytest.approx(1.0, abs=1e-12) and part_a == pytest.approx(1.0, abs=1e-12)
    shuffled = [
        torch.from_numpy(np.random.default_rng(k).permutation(65536).reshape(1, 256, 256) * 1.0)
        for k in (1, 2, 3)
    ]
    low = _values("Q_NCIE", *shuffled)[0]  # three independent images: near the floor 1 - log_256 3
    assert 1 - math.log(3, 256) <= low < 0.81


@pytest.mark.parametrize("name", NAMES)
def test_average_fusion_in_range(name, mri_ct):
    total, part_a, part_b = _values(name, *mri_ct)
    for value in (part_a, part_b):
        assert 0.0 <= value <= 1.0
    assert 0.0 <= total <= UPPER.get(name, 2.0)
    if name == "Q_NCIE":
        assert total >= 1 - math.log(3, 256)


# --- degenerate inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_constant_images_without_warnings(name, mri_ct):
    a, b, f = (x[:, 64:192, 64:192] for x in mri_ct)
    zero, grey = torch.zeros_like(a), torch.full_like(a, 100.0)
    for case in ((zero, zero, zero), (grey, grey, grey), (a, b, zero), (grey, b, f), (zero, grey, grey)):
        out = _run(name, *case)
        for value in out.values():
            assert not torch.isinf(value).any()
    for same in (zero, grey):
        total, part_a, part_b = _values(name, same, same, same)
        if name == "Q_NCIE":  # one rank bin: every NCC is 0, the minimum 1 - log_256 3
            assert (part_a, part_b) == (0.0, 0.0) and total == pytest.approx(1 - math.log(3, 256))
        else:
            assert part_a == pytest.approx(1.0) and part_b == pytest.approx(1.0)


def test_degenerate_shapes_give_nan():
    small = torch.rand(1, 4, 4, dtype=torch.float64) * 255
    assert torch.isnan(_run("FMI_wavelet", small, small, small)["FMI_wavelet"]).all()
    tiny = torch.rand(1, 10, 30, dtype=torch.float64) * 255
    assert torch.isnan(_run("MS_SSIM", tiny, tiny, tiny)["MS_SSIM"]).all()
    assert torch.isnan(_run("Q_Y", tiny[:, :6], tiny[:, :6], tiny[:, :6])["Q_Y"]).all()


def test_q_y_parts_undefined_when_a_is_flat_everywhere_b_is_not():
    b = torch.from_numpy(np.round(np.random.default_rng(5).random((1, 40, 40)) * 255))
    out = _run("Q_Y", torch.full_like(b, 9.0), b, b)
    assert torch.isnan(out["Q_Y_A"]).all() and torch.isfinite(out["Q_Y"]).all()


# --- 3-D, batches, tiling ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_volumes(name, mni):
    a, b = mni
    total, part_a, part_b = _values(name, a, b, (a + b) / 2)
    assert all(math.isfinite(v) for v in (total, part_a, part_b))
    assert 0.0 <= part_a <= 1.0 and 0.0 <= part_b <= 1.0
    same_a, same_b = _values(name, a, b, a)[1:]
    assert same_a > same_b and same_a >= part_a


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single_items(name, mri_ct):
    a, b, f = mri_ct
    crops = [
        (slice(0, 96), slice(0, 96)),
        (slice(80, 176), slice(80, 176)),
        (slice(150, 246), slice(60, 156)),
    ]
    items = [tuple(x[(slice(None), *crop)] for x in (a, b, f)) for crop in crops]
    batch = _run(name, *(torch.cat(parts) for parts in zip(*items, strict=True)))
    for k, item in enumerate(items):
        single = _run(name, *item)
        for key, value in single.items():
            assert batch[key][k].item() == pytest.approx(value.item(), rel=1e-10, abs=1e-13), key


@pytest.mark.parametrize("name", ("Q_Y", "MS_SSIM", "Q_E", "Q_NCIE"))
def test_tiles_and_chunks_do_not_change_values(name, mni, monkeypatch):
    a, b = (x[:, :24, :28, :26] for x in mni)
    f = (a + b) / 2
    expected = _run(name, a, b, f)
    monkeypatch.setattr(filters, "TILE_ELEMENTS", 500)
    monkeypatch.setattr(information, "_NCIE_CHUNK", 777)
    tiled = _run(name, a, b, f)
    for key, value in expected.items():
        assert tiled[key].item() == pytest.approx(value.item(), rel=1e-10, abs=1e-13), key


def test_non_contiguous_inputs(mri_ct):
    a, b, f = (x[:, :80, :72].transpose(1, 2) for x in mri_ct)
    assert not a.is_contiguous()
    for name in NAMES:
        out = _run(name, a, b, f)
        again = _run(name, a.contiguous(), b.contiguous(), f.contiguous())
        for key in out:
            assert out[key].item() == pytest.approx(again[key].item(), rel=1e-12, abs=1e-14)


def test_ms_ssim_uses_the_scales_that_fit():
    assert [structural._scale_count((n, n)) for n in (256, 176, 128, 100, 40, 21, 11, 10)] == [
        5,
        5,
        4,
        4,
        2,
        2,
        1,
        0,
    ]
    x = torch.rand(1, 40, 44, dtype=torch.float64) * 255
    y = (x + torch.rand(1, 40, 44, dtype=torch.float64) * 60).clamp(0, 255)
    out = _run("MS_SSIM", x, x, y)
    assert 0.0 < out["MS_SSIM_A"].item() < 1.0


def test_fmi_samples_windows_of_large_items():
    assert information._grid((254, 254, 254), information.FMI_MAX_WINDOWS)[0] == 7
    assert information._grid((89, 107, 89), information.FMI_MAX_WINDOWS)[0] == 3
    assert information._grid((254, 254), information.FMI_MAX_WINDOWS)[0] == 1


# --- helpers -------------------------------------------------------------------------------------


def test_haar_detail_magnitude_matches_pywavelets():
    rng = np.random.default_rng(3)
    image = rng.random((15, 18)) * 255
    _, details = pywt.dwt2(image, "haar")
    expected = np.sqrt(sum(d * d for d in details))
    got = filters.haar_detail_magnitude(torch.from_numpy(image).unsqueeze(0))[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-9)
    volume = rng.random((7, 8, 9)) * 255
    coefficients = pywt.dwtn(volume, "haar")
    expected = np.sqrt(sum(c * c for key, c in coefficients.items() if key != "aaa"))
    got = filters.haar_detail_magnitude(torch.from_numpy(volume).unsqueeze(0))[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("shape", [(2, 17, 20), (1, 9, 12, 10)])
def test_tiled_helpers_match_the_plain_ones(shape, monkeypatch):
    x = torch.from_numpy(np.round(np.random.default_rng(4).random(shape) * 255))
    dims = filters.spatial_dims(x)
    reference = torch.sqrt(sum(g * g for g in filters.sobel_gradients(x)))
    for budget in (1 << 17, 30):
        monkeypatch.setattr(filters, "TILE_ELEMENTS", budget)
        assert torch.equal(filters.sobel_magnitude(x), reference)  # exact for integer data
    for width in (2, 3, 7):
        assert torch.allclose(
            filters.box_sum_valid(x, width, dims), filters.box_mean_valid(x, width, dims) * width ** len(dims)
        )

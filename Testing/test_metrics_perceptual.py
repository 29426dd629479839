"""Perceptual fusion metrics Q_CB (Chen-Blum) and Q_CV (Chen-Varshney) in 2-D and 3-D."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import DATA

from MedFusionLib.metrics import get_metric, perceptual
from MedFusionLib.metrics.filters import block_sums, sobel_gradients

KEYS = {"Q_CB": ("Q_CB", "Q_CB_A", "Q_CB_B"), "Q_CV": ("Q_CV", "Q_CV_A", "Q_CV_B")}
METRICS = {"Q_CB": perceptual.q_cb, "Q_CV": perceptual.q_cv}

# Harvard MRI/CT pair 11 (gray = round(0.299 R + 0.587 G + 0.114 B)), F = round((A + B) / 2) and
# F = max(A, B). Q_CB agrees to 3e-8, Q_CV to 2e-15, with an independent NumPy/SciPy
# re-implementation of the same conventions (spatial-domain Gaussians with periodic boundary).
EXPECTED = {
    "average": {
        "Q_CB": (0.6543707532453, 0.6436795417096, 0.6646473768657),
        "Q_CV": (1369.167969704, 1248.484554622, 1476.573264735),
    },
    "maximum": {
        "Q_CB": (0.6720127028153, 0.6454500472705, 0.6975453014810),
        "Q_CV": (1675.854164174, 2664.355619589, 796.1119859701),
    },
}


def _gray(path: str) -> torch.Tensor:
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "harvard" / path))).astype(np.float64)
    return torch.from_numpy(np.round(rgb @ np.array([0.299, 0.587, 0.114])))


@pytest.fixture(scope="module")
def mri_ct() -> tuple[torch.Tensor, torch.Tensor]:
    return _gray("MRI_CT/MRI/11.png")[None], _gray("MRI_CT/CT/11.png")[None]


@pytest.fixture(scope="module")
def mni_pair() -> tuple[torch.Tensor, torch.Tensor]:
    volumes = []
    for name in ("spm_T1", "spm_PET"):
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "mni" / f"{name}.nii.gz"))).astype(
            np.float64
        )
        volumes.append(array)
    assert volumes[0].shape == volumes[1].shape == (91, 109, 91)  # one MNI grid, no resampling needed
    return tuple(torch.from_numpy(np.round(255.0 * v / v.max()))[None] for v in volumes)


def _score(name: str, a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = METRICS[name](a, b, f)
    assert set(result) == set(KEYS[name])
    for value in result.values():
        assert value.dtype == torch.float64 and value.shape == (a.shape[0],)
    return result


def _values(result: dict[str, torch.Tensor], name: str, item: int = 0) -> list[float]:
    return [float(result[key][item]) for key in KEYS[name]]


# --- independent references: direct formulas, no packing, separability or slabs ----------------


def _grid_frequencies(spatial: tuple[int, ...]) -> list[torch.Tensor]:
    axes = [torch.fft.fftfreq(n, d=1.0 / n).to(torch.float64) for n in spatial]
    return list(torch.meshgrid(*axes, indexing="ij"))


def _circular_gaussian_transfer(spatial: tuple[int, ...], sigma: float) -> torch.Tensor:
    """DFT of the unit-sum Gaussian on a 31^d support, wrapped circularly onto the image grid."""
    offsets = torch.stack(torch.meshgrid(*[torch.arange(-15, 16)] * len(spatial), indexing="ij"), dim=-1)
    weights = torch.exp(-(offsets.to(torch.float64) ** 2).sum(dim=-1) / (2 * sigma * sigma)).flatten()
    index = torch.zeros_like(weights, dtype=torch.int64)
    for axis, n in enumerate(spatial):
        index = index * n + offsets[..., axis].flatten() % n
    kernel = torch.zeros(math.prod(spatial), dtype=torch.float64).index_add_(
        0, index, weights / weights.sum()
    )
    return torch.fft.fftn(kernel.view(spatial)).real


def _reference_q_cb(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> list[float]:
    spatial = tuple(a.shape)
    r = torch.sqrt(sum((k / 15.0) ** 2 for k in _grid_frequencies(spatial)))
    csf = torch.exp(-((r / 15.3870) ** 2)) - 0.7622 * torch.exp(-((r / 1.3456) ** 2))
    g1, g2 = (_circular_gaussian_transfer(spatial, s) for s in (2.0, 4.0))

    def masked(x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.fftn(x) * csf
        band, low = torch.fft.ifftn(spectrum * g1).real, torch.fft.ifftn(spectrum * g2).real
        c = (band / low - 1).abs()
        c[(low.abs() <= 1e-13 * x.abs().max()) | ~(c >= 1e-9)] = 0
        return c**3 / (c**2 + 1e-4)

    ca, cb, cf = masked(a), masked(b), masked(f)

    def preserved(x: torch.Tensor) -> torch.Tensor:
        hi, lo = torch.maximum(x, cf), torch.minimum(x, cf)
        return torch.where(hi == 0, torch.ones_like(hi), lo / hi)

    total = ca**2 + cb**2
    lam_a = torch.where(total == 0, torch.full_like(total, 0.5), ca**2 / total)
    lam_b = 1 - lam_a
    qa, qb = lam_a * preserved(ca), lam_b * preserved(cb)
    return [float((qa + qb).mean()), float(qa.sum() / lam_a.sum()), float(qb.sum() / lam_b.sum())]


def _reference_q_cv(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> list[float]:
    spatial = tuple(a.shape)
    r = torch.sqrt(sum((k / 4.0) ** 2 for k in _grid_frequencies(spatial)))
    csf = 2.6 * (0.0192 + 0.114 * r) * torch.exp(-((0.114 * r) ** 1.1))
    blocks = [[slice(s, min(s + 16, n)) for s in range(0, n, 16)] for n in spatial]
    sums = {"wa": 0.0, "wb": 0.0, "la": 0.0, "lb": 0.0}
    edges = {k: torch.sqrt(sum(g**2 for g in sobel_gradients(x[None])))[0] for k, x in (("a", a), ("b", b))}
    dist = {k: torch.fft.ifftn(torch.fft.fftn(x - f) * csf).real ** 2 for k, x in (("a", a), ("b", b))}
    for region in np.ndindex(*(len(axis) for axis in blocks)):
        window = tuple(blocks[axis][i] for axis, i in enumerate(region))
        for k in ("a", "b"):
            saliency = float(edges[k][window].sum())
            sums["w" + k] += saliency * float(dist[k][window].mean())
            sums["l" + k] += saliency
    return [
        (sums["wa"] + sums["wb"]) / (sums["la"] + sums["lb"]),
        sums["wa"] / sums["la"],
        sums["wb"] / sums["lb"],
    ]


REFERENCES = {"Q_CB": _reference_q_cb, "Q_CV": _reference_q_cv}


# --- tests ---------------------------------------------------------------------------------------


def test_registered_with_conventions() -> None:
    assert get_metric("Q_CB").higher_is_better and not get_metric("Q_CV").higher_is_better
    for name in METRICS:
        metric = get_metric(name)
        assert metric.function is METRICS[name] and metric.keys == KEYS[name]
        assert metric.citation and metric.undefined_when and not metric.reference


@pytest.mark.parametrize("rule", ["average", "maximum"])
@pytest.mark.parametrize("name", ["Q_CB", "Q_CV"])
def test_harvard_pair_values(mri_ct: tuple[torch.Tensor, torch.Tensor], name: str, rule: str) -> None:
    a, b = mri_ct
    f = torch.round((a + b) / 2) if rule == "average" else torch.maximum(a, b)
    values = _values(_score(name, a, b, f), name)
    assert all(math.isfinite(v) for v in values)
    assert min(values[1:]) <= values[0] <= max(values[1:])
    if name == "Q_CB":
        assert 0.3 < values[0] < 0.8
    else:
        assert 100 < values[0] < 10_000
    assert values == pytest.approx(EXPECTED[rule][name], rel=1e-5 if name == "Q_CB" else 1e-9)


@pytest.mark.parametrize("shape", [(37, 50), (21, 16, 19)])
@pytest.mark.parametrize("name", ["Q_CB", "Q_CV"])
def test_matches_direct_formulas(name: str, shape: tuple[int, ...]) -> None:
    """Odd sizes, partial regions, 2-D and 3-D: the optimised code equals the textbook formulas."""
    gen = torch.Generator().manual_seed(len(shape))
    a, b = (torch.rand(shape, generator=gen, dtype=torch.float64) * 255 for _ in range(2))
    f = 0.6 * a + 0.4 * b + torch.rand(shape, generator=gen, dtype=torch.float64) * 10
    got = _values(_score(name, a[None], b[None], f[None]), name)
    assert got == pytest.approx(REFERENCES[name](a, b, f), rel=1e-10)


def test_sobel_block_sums_match_sobel_gradients() -> None:
    gen = torch.Generator().manual_seed(3)
    for shape in [(2, 40, 35), (1, 37, 20, 18)]:
        x = torch.rand(shape, generator=gen, dtype=torch.float64) * 255
        expected = block_sums(torch.sqrt(sum(g**2 for g in sobel_gradients(x))), 16)
        assert torch.allclose(perceptual._sobel_block_sums(x, 16, 1.0), expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("name", ["Q_CB", "Q_CV"])
def test_identities(mri_ct: tuple[torch.Tensor, torch.Tensor], name: str) -> None:
    a, b = mri_ct
    copy_a = _values(_score(name, a, b, a.clone()), name)
    same = _values(_score(name, a, a.clone(), a.clone()), name)
    if name == "Q_CB":
        assert copy_a[1] == 1.0 and 0.0 < copy_a[2] < 1.0 and 0.0 < copy_a[0] < 1.0
        assert same == [1.0, 1.0, 1.0]
    else:
        assert copy_a[1] == 0.0 and copy_a[2] > 0.0
        assert same == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("name", ["Q_CB", "Q_CV"])
def test_degenerate_images_do_not_warn(mri_ct: tuple[torch.Tensor, torch.Tensor], name: str) -> None:
    a, b = mri_ct
    zero, grey = torch.zeros_like(a), torch.full_like(a, 100.0)
    zeros = _values(_score(name, zero, zero, zero), name)
    constants = _values(_score(name, grey, 0.5 * grey, 0.2 * grey), name)
    flat_fused = _values(_score(name, a, b, grey), name)
    zero_source = _values(_score(name, zero, b, torch.round((a + b) / 2)), name)
    if name == "Q_CB":
        assert zeros == [1.0, 1.0, 1.0] and constants == [1.0, 1.0, 1.0]  # no contrast anywhere: preserved
        assert flat_fused == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)  # every source contrast lost
        assert all(0.0 <= v <= 1.0 for v in zero_source)
    else:
        assert all(math.isnan(v) for v in zeros)  # no Sobel edge in either source
        assert all(math.isfinite(v) and v > 0 for v in constants)  # zero padding: edges at the border
        assert all(math.isfinite(v) for v in flat_fused)
        assert math.isnan(zero_source[1]) and zero_source[0] == zero_source[2]


@pytest.mark.parametrize("name", ["Q_CB", "Q_CV"])
def test_batch_equals_single_calls(mri_ct: tuple[torch.Tensor, torch.Tensor], name: str) -> None:
    a, b = mri_ct
    pet = _gray("MRI_PET/PET/11.png")[None]
    sources_a = torch.cat([a, a, b])
    sources_b = torch.cat([b, pet, pet])
    fused = torch.cat([torch.round((a + b) / 2), torch.maximum(a, pet), torch.round(0.3 * b + 0.7 * pet)])
    batch = _score(name, sources_a, sources_b, fused)
    for i in range(3):
        single = _score(name, sources_a[i : i + 1], sources_b[i : i + 1], fused[i : i + 1])
        for key in KEYS[name]:
            assert torch.allclose(batch[key][i : i + 1], single[key], rtol=1e-12, atol=0.0, equal_nan=True)


@pytest.mark.parametrize("name", ["Q_CB", "Q_CV"])
def test_volumes(mni_pair: tuple[torch.Tensor, torch.Tensor], name: str) -> None:
    a, b = mni_pair
    average = torch.round((a + b) / 2)
    batch = _score(name, torch.cat([a, a]), torch.cat([b, b]), torch.cat([average, a]))
    fused, copy_a = _values(batch, name, 0), _values(batch, name, 1)
    assert all(math.isfinite(v) for v in fused + copy_a)
    if name == "Q_CB":
        assert 0.2 < fused[0] < 0.9 and copy_a[1] == 1.0
    else:
        assert 1.0 < fused[0] < 10_000 and copy_a[1] == 0.0
    assert _values(_score(name, a, b, average), name) == pytest.approx(fused, rel=1e-12)

"""Properties every registered fusion method must have, in 2-D and 3-D, on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import harvard_gray, mni_volume

from MedFusionLib.fusion import fuse_arrays, get_method, list_methods

REQUIRED = (
    "average",
    "weighted_average",
    "maximum",
    "pca",
    "laplacian_pyramid",
    "ratio_pyramid",
    "gradient_pyramid",
    "contrast_pyramid",
    "dwt",
    "swt",
    "gff",
    "cbf",
    "jbf_lge",
    "pa_pcnn",
)


def _fuse(a: np.ndarray, b: np.ndarray, name: str) -> np.ndarray:
    return fuse_arrays(a, b, method=name, device="cpu")


def test_registry_has_the_required_methods() -> None:
    names = [m.name for m in list_methods()]
    assert set(REQUIRED) <= set(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", REQUIRED)
def test_registry_entry_is_complete(name: str) -> None:
    spec = get_method(name)
    assert spec.family and spec.citation and spec.summary
    assert set(spec.dims) == {2, 3}
    defaults = spec.resolve_parameters({})
    assert set(defaults) == {p.name for p in spec.parameters}


@pytest.fixture(scope="module")
def pair_2d() -> tuple[np.ndarray, np.ndarray]:
    return harvard_gray("MRI_PET", "MRI", 11), harvard_gray("MRI_PET", "PET", 11)


@pytest.fixture(scope="module")
def pair_3d() -> tuple[np.ndarray, np.ndarray]:
    return mni_volume("spm_T1"), mni_volume("spm_PET")


def _check_fusion_properties(a: np.ndarray, b: np.ndarray, name: str) -> np.ndarray:
    a_before, b_before = a.copy(), b.copy()
    fused = _fuse(a, b, name)
    assert fused.shape == a.shape and fused.dtype == np.float32
    assert np.isfinite(fused).all()
    assert fused.min() >= 0.0 and fused.max() <= 1.0
    np.testing.assert_array_equal(a, a_before)  # inputs untouched
    np.testing.assert_array_equal(b, b_before)
    # both inputs influence the result
    assert np.abs(fused - a).mean() > 1e-3
    assert np.abs(fused - b).mean() > 1e-3
    return fused


@pytest.mark.parametrize("name", REQUIRED)
def test_fuses_harvard_mri_pet_pair_in_2d(name: str, pair_2d: tuple[np.ndarray, np.ndarray]) -> None:
    a, _ = pair_2d
    _check_fusion_properties(*pair_2d, name)
    np.testing.assert_allclose(_fuse(a, a, name), a, atol=2e-4)  # fusing X with X gives X


@pytest.mark.parametrize("name", REQUIRED)
def test_fuses_spm_t1_with_pet_in_3d(name: str, pair_3d: tuple[np.ndarray, np.ndarray]) -> None:
    a, _ = pair_3d
    _check_fusion_properties(*pair_3d, name)
    crop = np.ascontiguousarray(a[25:65, 30:78, 25:65])  # 40x48x40 through the brain
    np.testing.assert_allclose(_fuse(crop, crop, name), crop, atol=2e-4)


@pytest.mark.parametrize("name", REQUIRED)
def test_is_deterministic_on_cpu(name: str, pair_2d: tuple[np.ndarray, np.ndarray]) -> None:
    first = _fuse(*pair_2d, name)
    second = _fuse(*pair_2d, name)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name", REQUIRED)
def test_swapping_inputs_keeps_symmetric_rules_symmetric(
    name: str, pair_2d: tuple[np.ndarray, np.ndarray]
) -> None:
    """Rules that treat A and B alike give the same result either way round."""
    spec = get_method(name)
    if name == "weighted_average":
        pytest.skip("weights A and B differently by design unless weight=0.5")
    a, b = pair_2d
    forward = _fuse(a, b, name)
    backward = _fuse(b, a, name)
    # ties and decision-map consistency can flip a few pixels; most must agree
    agree = np.isclose(forward, backward, atol=1e-4).mean()
    assert agree > 0.95, f"{spec.name}: only {agree:.1%} of pixels agree when A and B swap"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", REQUIRED)
def test_cuda_matches_cpu(name: str, pair_2d: tuple[np.ndarray, np.ndarray]) -> None:
    cpu = fuse_arrays(*pair_2d, method=name, device="cpu")
    gpu = fuse_arrays(*pair_2d, method=name, device="cuda")
    assert np.isclose(cpu, gpu, atol=1e-3).mean() > 0.99

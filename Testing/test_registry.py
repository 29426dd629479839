"""The method registry: parameter validation, parsing, slab bounds and the Image model."""

from __future__ import annotations

import numpy as np
import pytest

from MedFusionLib.errors import InputError, ParameterError
from MedFusionLib.fusion import fuse_arrays, get_method
from MedFusionLib.fusion.registry import Parameter
from MedFusionLib.fusion.runner import slab_bounds
from MedFusionLib.image import Image


def test_parameter_range_and_type_are_enforced() -> None:
    p = Parameter("levels", "int", 4, min=1, max=8)
    assert p.validate(5, method="m") == 5
    assert p.validate(5.0, method="m") == 5
    with pytest.raises(ParameterError, match="levels.*out of range"):
        p.validate(9, method="m")
    with pytest.raises(ParameterError, match="expects int"):
        p.validate(2.5, method="m")
    with pytest.raises(ParameterError, match="expects int"):
        p.validate(True, method="m")
    with pytest.raises(ParameterError, match="expects int"):
        p.parse("four", method="m")


def test_float_parameters_refuse_nan() -> None:
    p = Parameter("weight", "float", 0.5, min=0.0, max=1.0)
    with pytest.raises(ParameterError, match="finite"):
        p.validate(float("nan"), method="m")


def test_choices_and_bool_parsing() -> None:
    p = Parameter("rule", "str", "max_abs", choices=("max_abs", "local_energy"))
    with pytest.raises(ParameterError, match="not one of"):
        p.validate("median", method="m")
    flag = Parameter("consistency", "bool", True)
    assert flag.parse("off", method="m") is False
    with pytest.raises(ParameterError):
        flag.parse("maybe", method="m")


def test_resolve_parameters_refuses_unknown_names() -> None:
    spec = get_method("weighted_average")
    assert spec.resolve_parameters({}) == {"weight": 0.5}
    with pytest.raises(ParameterError, match="unknown parameter 'alpha'"):
        spec.resolve_parameters({"alpha": 0.3})
    assert spec.parse_parameters(["weight=0.25"]) == {"weight": 0.25}
    with pytest.raises(ParameterError, match="KEY=VALUE"):
        spec.parse_parameters(["weight"])


def test_unknown_method_names_the_known_ones() -> None:
    with pytest.raises(ParameterError, match="unknown fusion method 'nope'.*average"):
        get_method("nope")


def test_slabs_cover_the_volume_once_with_aligned_halos() -> None:
    bounds = slab_bounds(100, 1000, halo=5, alignment=4, max_voxels=30_000)
    kept = [i for _, _, lo, hi in bounds for i in range(lo, hi)]
    assert kept == list(range(100))
    for read_lo, read_hi, keep_lo, keep_hi in bounds:
        assert read_lo % 4 == 0 and keep_lo % 4 == 0
        assert read_lo <= keep_lo - min(8, keep_lo) and read_hi >= min(100, keep_hi + 8)


def test_slab_runner_equals_whole_volume_for_pointwise_rules() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random((30, 20, 10), np.float32), rng.random((30, 20, 10), np.float32)
    whole = fuse_arrays(a, b, method="maximum", device="cpu")
    slabs = fuse_arrays(a, b, method="maximum", device="cpu", max_slab_voxels=600)
    np.testing.assert_array_equal(whole, slabs)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(InputError, match="differ in shape"):
        fuse_arrays(np.zeros((4, 4), np.float32), np.zeros((4, 5), np.float32), method="average")


def test_image_geometry_checks_and_world_bounds() -> None:
    img = Image(
        np.zeros((3, 4, 5), np.float32),
        spacing=(1, 2, 3),
        origin=(10, 0, 0),
        direction=tuple(np.eye(3).ravel()),
    )
    assert img.size == (5, 4, 3) and img.ndim == 3 and not img.is_rgb
    lo, hi = img.world_bounds()
    np.testing.assert_allclose(lo, (9.5, -1.0, -1.5))
    np.testing.assert_allclose(hi, (14.5, 7.0, 7.5))
    with pytest.raises(InputError, match="spacing"):
        Image(np.zeros((3, 4), np.float32), spacing=(1, 0), origin=(0, 0), direction=(1, 0, 0, 1))
    with pytest.raises(InputError, match="2-D or 3-D"):
        Image.from_array(np.zeros(5, np.float32))
    rgb = Image.from_array(np.zeros((4, 4, 3), np.uint8), rgb=True)
    assert rgb.is_rgb and rgb.ndim == 2 and not rgb.is_pseudo_colour

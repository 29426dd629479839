"""The argument contract of the public API and of the command's options (issue 12).

Every bad argument raises one of the project's exceptions with a one-line message naming the
argument (or the input, or the option on the command line); nothing reaches the user as a raw
RuntimeError, TypeError, AttributeError, OverflowError or SimpleITK error.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import mni_path

from MedFusionLib import pipeline
from MedFusionLib.benchmark.dataset import discover_pair_sets
from MedFusionLib.cli import main
from MedFusionLib.errors import GeometryError, InputError, MedFusionError, ParameterError
from MedFusionLib.fusion import fuse_arrays, fuse_tensors, get_method, list_methods
from MedFusionLib.image import Image
from MedFusionLib.metrics.compute import compute_metrics
from MedFusionLib.pipeline import fuse_images
from MedFusionLib.preprocess import check_window
from MedFusionLib.registration import register
from MedFusionLib.validation import check_device, check_int, check_seed

RNG = np.random.default_rng(12)


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert message and "\n" not in message and message.strip() == message
    return message


def _pair(shape: tuple[int, ...] = (24, 24)) -> tuple[np.ndarray, np.ndarray]:
    return RNG.random(shape).astype(np.float32), RNG.random(shape).astype(np.float32)


def _images(shape: tuple[int, ...] = (24, 24)) -> tuple[Image, Image]:
    a, b = _pair(shape)
    return Image.from_array(a), Image.from_array(b)


# --- fuse_tensors / fuse_arrays: floating point in [0, 1], one device, finite -----------------
@pytest.mark.parametrize("method", [m.name for m in list_methods()])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.int32, torch.complex64])
def test_integer_bool_and_complex_tensors_are_refused_by_every_method(
    method: str, dtype: torch.dtype
) -> None:
    a, b = (torch.from_numpy(x * 255).to(dtype) for x in _pair())
    with pytest.raises(InputError) as error:
        fuse_tensors(a, b, method=method)
    message = one_line(error)
    assert message.startswith(f"a is a {dtype} tensor") and "floating-point" in message and "255" in message


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
@pytest.mark.parametrize("method", ["laplacian_pyramid", "gain_fusion_net"])
def test_floating_tensors_of_any_precision_fuse_and_keep_their_dtype(method: str, dtype: torch.dtype) -> None:
    a, b = (torch.from_numpy(x) for x in _pair((32, 32)))
    fused = fuse_tensors(a.to(dtype), b.to(dtype), method=method)
    assert fused.dtype == dtype and torch.isfinite(fused).all()
    reference = fuse_tensors(a, b, method=method)
    assert float((fused.float() - reference).abs().max()) < 0.02


def test_tensor_inputs_are_checked() -> None:
    a, b = (torch.from_numpy(x) for x in _pair())
    cases = {
        "contains NaN": (torch.full_like(a, math.nan), b),
        "contains NaN or infinite": (a, torch.full_like(b, math.inf)),
        "a has values in [": (a * 255, b),
        "is empty": (a[:0], b[:0]),
        "must be a torch.Tensor": (a.numpy(), b),
        "on cpu but b on meta": (a, b.to("meta")),
        "differ in shape": (a, b[:-1]),
    }
    for expected, (x, y) in cases.items():
        with pytest.raises(InputError) as error:
            fuse_tensors(x, y, method="average")
        assert expected in one_line(error)
    with pytest.raises(ParameterError) as error:
        fuse_tensors(a, b, method="dwt", parameters=[1, 2])
    assert "parameters must be a mapping" in one_line(error)
    mixed = fuse_tensors(a, b.double(), method="average")  # promoted to the wider type
    assert mixed.dtype == torch.float64


def test_fuse_arrays_follows_the_tensor_rules() -> None:
    a, b = _pair()
    with pytest.raises(InputError, match="a is a uint8 array: fusion takes floating-point"):
        fuse_arrays((a * 255).astype(np.uint8), b, method="average", device="cpu")
    with pytest.raises(InputError, match="b contains NaN"):
        fuse_arrays(a, np.full_like(b, np.nan), method="average", device="cpu")
    with pytest.raises(ParameterError, match="max_slab_voxels"):
        fuse_arrays(a, b, method="average", device="cpu", max_slab_voxels=0)
    with pytest.raises(ParameterError, match="progress"):
        fuse_arrays(a, b, method="average", device="cpu", progress=3)
    with pytest.raises(ParameterError, match="unknown device 'tpu'"):
        fuse_arrays(a, b, method="average", device="tpu")


# --- fuse_images: images, geometry, content on each input's own grid ----------------------------
def _bypassing_construction(image: Image, **geometry: object) -> Image:
    """An Image with geometry its constructor would refuse (as if mutated after creation)."""
    for key, value in geometry.items():
        object.__setattr__(image, key, value)
    return image


def test_fuse_images_refuses_what_is_not_a_usable_image() -> None:
    a, b = _images()
    cases: dict[str, tuple[object, object]] = {
        "image A must be a MedFusionLib.image.Image, got ndarray": (a.array, b),
        "image B has voxels of type object": (a, b.with_array(b.array.astype(object))),
        "image A has complex voxels": (a.with_array(a.array.astype(np.complex64)), b),
        "image B: direction (1, 0, 1, 0) is not orthonormal": (
            a,
            b.with_array(b.array, direction=(1, 0, 1, 0)),
        ),
        "image A: direction (1, 0.3, 0, 1) is not orthonormal": (
            a.with_array(a.array, direction=(1, 0.3, 0, 1)),
            b,
        ),
        "image B: voxel spacing (nan, 1) mm is not finite": (
            a,
            _bypassing_construction(b.with_array(b.array), spacing=(math.nan, 1.0)),
        ),
        "image A: origin (inf, 0) is not finite": (a.with_array(a.array, origin=(math.inf, 0.0)), b),
    }
    for expected, (x, y) in cases.items():
        with pytest.raises(InputError) as error:
            fuse_images(x, y, method="average", device="cpu")  # type: ignore[arg-type]
        assert one_line(error).startswith(expected), str(error.value)


def test_fuse_images_checks_its_options_before_the_pixels() -> None:
    a, b = _images()
    cases = {
        "parameters must be a mapping": {"parameters": [1, 2]},
        "a fusion method is given by its name": {"method": 3},
        "device: unknown device 'nonsense'": {"device": "nonsense"},
        "device: a device is a name": {"device": None},
        "window_a: window width must be > 0": {"window_a": (40, 0)},
        "window_b: unknown CT window 'x'": {"window_b": "x"},
        "unknown interpolation 'cubic'": {"interpolation": "cubic"},
        "max_slab_voxels must be an integer": {"max_slab_voxels": "many"},
        "progress must be callable": {"progress": 3},
        "transform must be a SimpleITK transform": {"transform": "identity"},
        "transform is a 3-D transform but the images are 2-D": {"transform": sitk.Euler3DTransform()},
        "name_a must be a string": {"name_a": 3},
    }
    for expected, options in cases.items():
        with pytest.raises(ParameterError) as error:
            fuse_images(a, b, **{"device": "cpu", **options})  # type: ignore[arg-type]
        assert expected in one_line(error), str(error.value)


def test_a_constant_reference_is_named_before_b_is_resampled(monkeypatch: pytest.MonkeyPatch) -> None:
    _, b = _images()
    flat = Image.from_array(np.full((20, 20), 3.0, np.float32), spacing=(1.3, 1.3))

    def no_resampling(*args: object, **kwargs: object) -> None:
        raise AssertionError("resampled before the inputs were checked")

    monkeypatch.setattr(pipeline, "resample_to", no_resampling)
    with pytest.raises(InputError) as error:
        fuse_images(flat, b, name_a="flat.nii", device="cpu")
    assert one_line(error) == "flat.nii is constant (value 3): nothing to fuse"
    with pytest.raises(InputError) as error:
        fuse_images(b, Image.from_array(np.full((20, 20), np.nan, np.float32)), name_b="nan.nrrd")
    assert one_line(error) == "nan.nrrd contains no finite voxels"


def test_a_grid_that_misses_b_is_a_geometry_error_naming_both() -> None:
    a, b = _images()
    huge = b.with_array(b.array, spacing=(1e9, 1e9))  # A's whole grid lies in one voxel of B
    with pytest.raises(GeometryError) as error:
        fuse_images(a, huge, name_a="t1.nii", name_b="pet.nii", device="cpu")
    message = one_line(error)
    assert message.startswith("pet.nii varies on its own grid but is constant")
    assert "t1.nii" in message and "1e+09 x 1e+09 mm" in message
    far = b.with_array(b.array, origin=(1e4, 1e4))
    with pytest.raises(GeometryError) as error:
        fuse_images(a, far, name_a="t1.nii", name_b="far.nii", device="cpu")
    assert (
        "do not overlap" in one_line(error) and "t1.nii" in str(error.value) and "far.nii" in str(error.value)
    )


def test_paths_name_the_inputs_and_good_input_still_fuses() -> None:
    a, b = _images()
    result = fuse_images(a, b, method="average", device="cpu", name_a=Path("a.png"), name_b=Path("b.png"))

    def unit(x: np.ndarray) -> np.ndarray:  # no modality: minimum to 0, maximum to 1
        return (x - x.min()) / (x.max() - x.min())

    np.testing.assert_allclose(result.image.array, (unit(a.array) + unit(b.array)) / 2, atol=1e-6)


# --- registration ------------------------------------------------------------------------------
def test_register_checks_every_argument_before_itk_sees_it() -> None:
    a, b = _images((32, 32))
    cases: dict[str, tuple[type[MedFusionError], dict[str, object]]] = {
        "seed must be in 1..4294967295, got -1": (ParameterError, {"seed": -1}),
        "seed must be in 1..4294967295, got 0": (ParameterError, {"seed": 0}),
        f"seed must be in 1..4294967295, got {2**64}": (ParameterError, {"seed": 2**64}),
        "seed must be an integer, got 1.5": (ParameterError, {"seed": 1.5}),
        "sampling_fraction must be a number in (0, 1], got 'x'": (ParameterError, {"sampling_fraction": "x"}),
        "sampling_fraction must be in (0, 1], got nan": (ParameterError, {"sampling_fraction": math.nan}),
        "histogram_bins must be an integer": (ParameterError, {"histogram_bins": "50"}),
        "max_samples must be at least 1000": (ParameterError, {"max_samples": 10}),
        "unknown registration type 'warp'": (ParameterError, {"type": "warp"}),
        "initial_transform must be a SimpleITK transform": (ParameterError, {"initial_transform": "x"}),
        "fixed_mask must be a MedFusionLib.image.Image": (InputError, {"fixed_mask": np.ones((32, 32))}),
        "moving_mask has no non-zero voxel": (InputError, {"moving_mask": a.with_array(np.zeros((32, 32)))}),
    }
    for expected, (kind, options) in cases.items():
        with pytest.raises(kind) as error:
            register(a, b, **options)  # type: ignore[arg-type]
        assert one_line(error).startswith(expected), str(error.value)
    with pytest.raises(InputError) as error:
        register(a.with_array(np.ones((32, 32), np.float32)), b, name_fixed="flat.nii")
    assert one_line(error) == "flat.nii is constant (value 1): nothing to register"
    with pytest.raises(InputError, match="fixed must be a MedFusionLib.image.Image"):
        register(a.array, b)  # type: ignore[arg-type]


# --- metrics -----------------------------------------------------------------------------------
def test_compute_metrics_checks_its_arguments() -> None:
    a, b = (x * 255 for x in _pair())
    cases: dict[str, tuple[type[MedFusionError], tuple[object, ...], dict[str, object]]] = {
        "metrics must be a list of metric names": (ParameterError, (a, b, a), {"metrics": "SSIM"}),
        "metrics names no metric": (ParameterError, (a, b, a), {"metrics": []}),
        "axis must be an integer": (ParameterError, (a, b, a), {"axis": "0"}),
        "axis 3 is out of range for a 2-D image": (ParameterError, (a, b, a), {"axis": 3}),
        "names must be a sequence of 3 strings": (ParameterError, (a, b, a), {"names": ("x",)}),
        "device: unknown device 'nonsense'": (ParameterError, (a, b, a), {"device": "nonsense"}),
        "A has object values": (InputError, (a.astype(object), b, a), {}),
        "B has complex128 values": (InputError, (a, b.astype(complex), a), {}),
        "F has torch.bool values": (InputError, (a, b, torch.ones(a.shape, dtype=torch.bool)), {}),
        "A is not an array of grey levels": (InputError, ([[1, 2], [3]], b, a), {}),
    }
    for expected, (kind, images, options) in cases.items():
        with pytest.raises(kind) as error:
            compute_metrics(*images, **options)  # type: ignore[arg-type]
        assert one_line(error).startswith(expected), str(error.value)
    tensor_report = compute_metrics(torch.from_numpy(a), b, a, metrics=["EN"])
    assert tensor_report.values["EN"] == compute_metrics(a, b, a, metrics=["EN"]).values["EN"]


# --- registry, windows and shared checks ---------------------------------------------------------
def test_parameters_accept_numpy_numbers_and_refuse_the_rest() -> None:
    spec = get_method("laplacian_pyramid")
    params = spec.resolve_parameters({"levels": np.int64(3)})
    assert params["levels"] == 3 and type(params["levels"]) is int
    weighted = get_method("weighted_average").resolve_parameters({"weight": np.float32(0.25)})
    assert weighted["weight"] == 0.25 and type(weighted["weight"]) is float
    with pytest.raises(ParameterError, match="must be finite"):
        get_method("weighted_average").resolve_parameters({"weight": 10**400})
    with pytest.raises(ParameterError, match="unknown parameter"):
        spec.resolve_parameters({1: 2, "x": 3})
    with pytest.raises(ParameterError, match="list of KEY=VALUE"):
        spec.parse_parameters("levels=3")


def test_windows_devices_seeds_and_integers() -> None:
    assert check_window(None) is None and check_window("brain") == "brain"
    assert check_window(("40", 80)) == (40.0, 80.0)
    for bad, expected in [
        ((1, 2, 3), "must be a preset name"),
        ((40, -1), "width must be > 0"),
        ("x", "unknown CT"),
    ]:
        with pytest.raises(ParameterError, match=expected):
            check_window(bad, name="--window-a")  # type: ignore[arg-type]
    assert check_device("cpu").type == "cpu"
    with pytest.raises(ParameterError, match="^--device: unknown device 'tpu9'"):
        check_device("tpu9", name="--device")
    assert check_seed(2**32 - 1, name="seed") == 2**32 - 1
    with pytest.raises(ParameterError, match=r"seed must be in 0\.\.4294967295"):
        check_seed(2**32, name="seed")
    assert check_int(4.0, name="n") == 4
    for bad in (True, 2.5, "3", math.inf, None):
        with pytest.raises(ParameterError, match="n must be an integer"):
            check_int(bad, name="n")


# --- benchmark layout ----------------------------------------------------------------------------
def test_benchmark_layout_is_checked_before_any_work(tmp_path: Path) -> None:
    for modality in ("MRI", "PET"):
        (tmp_path / "MRI_PET" / modality).mkdir(parents=True)
        (tmp_path / "MRI_PET" / modality / "1.nii.gz").write_bytes(b"")
    with pytest.raises(InputError) as error:
        discover_pair_sets(tmp_path)
    message = one_line(error)
    assert "the benchmark scores 2-D slices" in message and "DATASET/<SET>/<MODALITY>/<id>.png" in message
    with pytest.raises(InputError) as error:
        discover_pair_sets(tmp_path / "MRI_PET")
    assert "looks like one pair set" in one_line(error)


# --- the command line: one line naming the option, exit 2, nothing written -----------------------
T1 = str(mni_path("spm_T1"))
PET = str(mni_path("spm_PET"))

CLI_CASES = {
    "register seed -1": (["register", T1, PET, "-o", "{tmp}/t.tfm", "--seed", "-1"], "--seed"),
    "register seed 2^64": (["register", T1, PET, "-o", "{tmp}/t.tfm", "--seed", str(2**64 + 5)], "--seed"),
    "register seed 0": (["register", T1, PET, "-o", "{tmp}/t.tfm", "--seed", "0"], "--seed"),
    "register sampling 2": (["register", T1, PET, "-o", "{tmp}/t.tfm", "--sampling", "2"], "--sampling"),
    "register sampling nan": (["register", T1, PET, "-o", "{tmp}/t.tfm", "--sampling", "nan"], "--sampling"),
    "fuse device": (["fuse", T1, PET, "-o", "{tmp}/f.nii.gz", "--device", "nonsense"], "--device"),
    "fuse interpolation": (
        ["fuse", T1, PET, "-o", "{tmp}/f.nii.gz", "--interpolation", "cubic"],
        "--interpolation",
    ),
    "fuse window malformed": (["fuse", T1, PET, "-o", "{tmp}/f.nii.gz", "--window-a", "1,2,3"], "--window-a"),
    "fuse window zero width": (["fuse", T1, PET, "-o", "{tmp}/f.nii.gz", "--window-b", "40,0"], "--window-b"),
    "fuse window unknown": (["fuse", T1, PET, "-o", "{tmp}/f.nii.gz", "--window-a", "liver"], "--window-a"),
    "fuse set malformed": (["fuse", T1, PET, "-o", "{tmp}/f.nii.gz", "--set", "levels"], "KEY=VALUE"),
    "metrics mode": (["metrics", T1, PET, T1, "--mode", "planes"], "--mode"),
    "metrics axis": (["metrics", T1, PET, T1, "--axis", "7"], "--axis"),
    "metrics device": (["metrics", T1, PET, T1, "--device", "nonsense"], "--device"),
    "metrics empty list": (["metrics", T1, PET, T1, "--metrics", ","], "--metrics"),
    "metrics window": (["metrics", T1, PET, T1, "--window-a", "40,-2"], "--window-a"),
    "benchmark threads": (["benchmark", "{tmp}", "--out", "{tmp}/bo", "--threads", "0"], "--threads"),
    "benchmark device": (["benchmark", "{tmp}", "--out", "{tmp}/bo", "--device", "nonsense"], "--device"),
    "benchmark methods": (["benchmark", "{tmp}", "--out", "{tmp}/bo", "--methods", ","], "--methods"),
    "benchmark volumes": (["benchmark", "{tmp}/volumes", "--out", "{tmp}/bo"], "DATASET/<SET>/<MODALITY>"),
    "train threads 0": (
        [
            "train",
            "gain_fusion_net",
            "--pair",
            "MRI_PET",
            "--data",
            "{tmp}",
            "--out",
            "{tmp}/w.safetensors",
            "--threads",
            "0",
        ],
        "--threads",
    ),
    "train without pair": (
        ["train", "gain_fusion_net", "--data", "{tmp}", "--out", "{tmp}/w.safetensors"],
        "--pair",
    ),
    "train unknown pair": (
        ["train", "gain_fusion_net", "--pair", "PET_CT", "--data", "{tmp}", "--out", "{tmp}/w.safetensors"],
        "PET_CT",
    ),
    "train steps -1": (
        [
            "train",
            "gain_fusion_net",
            "--pair",
            "MRI_CT",
            "--data",
            "{tmp}",
            "--out",
            "{tmp}/w.safetensors",
            "--steps",
            "-1",
        ],
        "--steps",
    ),
    "train batch 0": (
        [
            "train",
            "gain_fusion_net",
            "--pair",
            "MRI_CT",
            "--data",
            "{tmp}",
            "--out",
            "{tmp}/w.safetensors",
            "--batch",
            "0",
        ],
        "--batch",
    ),
    "train crop 32": (
        [
            "train",
            "gain_fusion_net",
            "--pair",
            "MRI_SPECT",
            "--data",
            "{tmp}",
            "--out",
            "{tmp}/w.safetensors",
            "--crop",
            "32",
        ],
        "--crop",
    ),
    "train seed -1": (
        [
            "train",
            "gain_fusion_net",
            "--pair",
            "MRI_PET",
            "--data",
            "{tmp}",
            "--out",
            "{tmp}/w.safetensors",
            "--seed",
            "-1",
        ],
        "--seed",
    ),
}


@pytest.mark.parametrize("case", CLI_CASES, ids=list(CLI_CASES))
def test_bad_options_exit_2_with_one_line_naming_the_option(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template, culprit = CLI_CASES[case]
    for modality in ("MRI", "PET"):
        folder = tmp_path / "volumes" / "MRI_PET" / modality
        folder.mkdir(parents=True)
        (folder / "1.nii.gz").write_bytes(b"")
    before = sorted(tmp_path.rglob("*"))
    code = main([part.format(tmp=tmp_path) for part in template])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and captured.err.startswith("medfusion: error:"), captured.err
    assert culprit in captured.err, captured.err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written

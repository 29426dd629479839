"""Colour fusion wired into the engine: ``fuse_images``, ``medfusion fuse``/``colormaps``, defaults, MRML.

Real patient data: a crop around the tumour of ``../shared/data/sts/STS_007`` (CT and T1 MR in
HU / normalised units, FDG-PET in SUV; CC BY 3.0, see ``../shared/data/README.md``) and the
same patient as DICOM series.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DATA
from helpers import harvard_path
from PIL import Image as PILImage

from MedFusionLib.cli import main
from MedFusionLib.colormaps import get_colormap, list_colormaps
from MedFusionLib.errors import ParameterError
from MedFusionLib.functional_fusion import RECOMMENDED
from MedFusionLib.fusion.runner import fuse_arrays
from MedFusionLib.image import Image
from MedFusionLib.io import read_image, write_image
from MedFusionLib.metrics.clinical import compute_clinical_metrics
from MedFusionLib.pipeline import DEFAULT_METHOD, fuse_images, plan_fusion
from MedFusionLib.preprocess import normalize_intensity, resample_to
from MedFusionLib.recommended import GRAY_METHOD, recommended

PATIENT = DATA / "sts" / "STS_007"
DICOM = DATA / "sts_dicom" / "STS_007"
MARGIN_MM = 25.0


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def crop_around_mask(image: sitk.Image, mask: sitk.Image, margin_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """The image and its mask cropped to the mask's bounding box plus a margin (geometry kept)."""
    array = sitk.GetArrayFromImage(mask) > 0
    z, y, x = np.nonzero(array)
    spacing = image.GetSpacing()
    low = [max(int(v.min() - margin_mm / s), 0) for v, s in zip((x, y, z), spacing, strict=True)]
    high = [
        min(int(v.max() + margin_mm / s) + 1, n)
        for v, s, n in zip((x, y, z), spacing, image.GetSize(), strict=True)
    ]
    size = [h - lo for lo, h in zip(low, high, strict=True)]
    return sitk.RegionOfInterest(image, size, low), sitk.RegionOfInterest(mask, size, low)


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """CT, MR (with masks) cropped 25 mm around the tumour, and the whole PET, as NIfTI files."""
    folder = tmp_path_factory.mktemp("sts007")
    paths = {"PET": PATIENT / "PET_image.nii.gz"}
    for key, stem in (("CT", "CT"), ("MR", "MR_T1")):
        image = sitk.ReadImage(str(PATIENT / f"{stem}_image.nii.gz"))
        mask = sitk.ReadImage(str(PATIENT / f"{stem}_mask.nii.gz"))
        image, mask = crop_around_mask(image, mask, MARGIN_MM)
        paths[key] = folder / f"{key}.nii.gz"
        paths[f"{key}_mask"] = folder / f"{key}_mask.nii.gz"
        sitk.WriteImage(image, str(paths[key]))
        sitk.WriteImage(mask, str(paths[f"{key}_mask"]))
    return paths


def old_gray_path(a: Image, b: Image, *, method: str = DEFAULT_METHOD) -> np.ndarray:
    """What fuse_images computed before colour fusion existed (gray, modality presets)."""
    gray_a = normalize_intensity(a)
    gray_b = normalize_intensity(resample_to(b, a))
    return fuse_arrays(gray_a, gray_b, method=method, parameters=None, device="cpu")


# --- the defaults table ----------------------------------------------------------------------------
class TestRecommended:
    @pytest.mark.parametrize(
        ("a", "b", "pair"),
        [
            ("CT", "PET", "CT_PET"),
            ("MR", "PET", "MR_PET"),
            ("CT", "SPECT", "CT_PET"),
            ("MR", "SPECT", "MR_PET"),
        ],
    )
    def test_functional_pairs_take_the_table_in_either_order(self, a: str, b: str, pair: str) -> None:
        for first, second in ((a, b), (b, a)):
            choice = recommended(first, second)
            assert choice.pair == pair
            assert choice.method == RECOMMENDED[pair]["method"]
            assert choice.colormap == RECOMMENDED[pair]["colormap"]
            assert choice.parameters == RECOMMENDED[pair]["parameters"]
        assert ("SPECT" in (a, b)) == ("SPECT takes the PET choice" in recommended(a, b).note)

    @pytest.mark.parametrize(
        ("a", "b"), [("MR", "CT"), ("MR", "MR"), ("CT", "CT"), ("PET", "PET"), (None, "PET"), (None, None)]
    )
    def test_other_pairs_stay_gray_with_the_old_default(self, a: str | None, b: str | None) -> None:
        choice = recommended(a, b)
        assert (choice.method, choice.colormap, choice.parameters) == (GRAY_METHOD, None, {})
        assert GRAY_METHOD == DEFAULT_METHOD == "laplacian_pyramid"


# --- fuse_images ------------------------------------------------------------------------------------
class TestFuseImages:
    @pytest.mark.parametrize("modality", ["CT", "MR"])
    def test_anatomical_plus_pet_gives_rgb_on_a_grid(self, patient: dict[str, Path], modality: str) -> None:
        a = read_image(patient[modality], modality=modality)
        pet = read_image(patient["PET"], modality="PET")
        result = fuse_images(a, pet, device="cpu")
        choice = recommended(modality, "PET")
        assert result.method == choice.method and result.colormap == choice.colormap
        fused = result.image
        assert fused.is_rgb and fused.array.dtype == np.float32 and fused.array.shape == a.shape + (3,)
        assert fused.same_grid(a)
        assert 0.0 <= fused.array.min() and fused.array.max() <= 1.0
        summary = result.summary()
        assert summary["colormap"] == choice.colormap and summary["rgb"] is True
        assert summary["modalities"] == [modality, "PET"]

    def test_roles_follow_modality_when_a_is_the_pet(self, patient: dict[str, Path]) -> None:
        ct = read_image(patient["CT"], modality="CT")
        pet = read_image(patient["PET"], modality="PET")
        swapped = fuse_images(pet, ct, device="cpu")
        assert swapped.image.is_rgb and swapped.image.same_grid(pet)
        assert swapped.colormap == recommended("PET", "CT").colormap
        # the same colour fusion as CT-first, only on the PET's grid: resample the CT-first
        # output onto the PET grid and compare where the CT covers it
        straight = fuse_images(ct, pet, device="cpu").image
        inside = (
            resample_to(ct.with_array(np.ones(ct.shape, np.float32)), pet, default_value=0.0).array > 0.99
        )
        assert inside.sum() > 100
        back = resample_to(straight, pet).array[inside]
        assert np.median(np.abs(back - swapped.image.array[inside])) < 0.1

    def test_colormap_none_is_bit_identical_to_the_gray_path(self, patient: dict[str, Path]) -> None:
        ct = read_image(patient["CT"], modality="CT")
        pet = read_image(patient["PET"], modality="PET")
        result = fuse_images(ct, pet, colormap="none", device="cpu")
        assert not result.image.is_rgb and result.colormap is None and result.method == DEFAULT_METHOD
        np.testing.assert_array_equal(result.image.array, old_gray_path(ct, pet))
        assert fuse_images(ct, pet, colormap=None, device="cpu").summary()["colormap"] is None

    def test_unknown_modalities_keep_the_gray_default(self, patient: dict[str, Path]) -> None:
        ct, pet = read_image(patient["CT"]), read_image(patient["PET"])
        assert ct.modality is None and pet.modality is None
        result = fuse_images(ct, pet, device="cpu")
        assert result.method == DEFAULT_METHOD and result.colormap is None and not result.image.is_rgb
        np.testing.assert_array_equal(result.image.array, old_gray_path(ct, pet))

    def test_explicit_method_and_table(self, patient: dict[str, Path]) -> None:
        mr = read_image(patient["MR"], modality="MR")
        pet = read_image(patient["PET"], modality="PET")
        result = fuse_images(mr, pet, method="average", colormap="inferno", device="cpu")
        assert (result.method, result.colormap, result.image.is_rgb) == ("average", "inferno", True)
        # the hottest voxels take the table's top colour's hue (inferno's top is pale yellow)
        hot = resample_to(pet, mr).array >= np.percentile(resample_to(pet, mr).array, 99.9)
        colours = result.image.array[hot]
        assert (colours[:, 0] > colours[:, 2]).mean() > 0.9

    def test_2d_slices(self, patient: dict[str, Path]) -> None:
        ct = read_image(patient["CT"], modality="CT")
        pet = resample_to(read_image(patient["PET"], modality="PET"), ct)
        middle = ct.shape[0] // 2

        def slice_of(image: Image) -> Image:
            return Image(
                array=image.array[middle],
                spacing=image.spacing[:2],
                origin=image.origin[:2],
                direction=(1.0, 0.0, 0.0, 1.0),
                modality=image.modality,
            )

        result = fuse_images(slice_of(ct), slice_of(pet), device="cpu")
        assert result.image.is_rgb and result.image.array.shape == ct.shape[1:] + (3,)

    def test_a_table_for_a_pair_that_cannot_be_coloured_is_refused(self, patient: dict[str, Path]) -> None:
        ct, pet = read_image(patient["CT"], modality="CT"), read_image(patient["PET"])
        with pytest.raises(ParameterError, match=r"colormap bmy: .*unknown modality"):
            fuse_images(ct, pet, colormap="bmy", name_b="pet.nii.gz")
        with pytest.raises(ParameterError, match="colormap: unknown colour table 'jet'"):
            fuse_images(ct, pet, colormap="jet")
        with pytest.raises(ParameterError, match="colormap must be a colour table name"):
            fuse_images(ct, pet, colormap=3)  # type: ignore[arg-type]

    def test_pseudo_colour_pet_keeps_its_own_colours(self) -> None:
        mri = read_image(harvard_path("MRI_PET", "MRI"), modality="MR")
        pet = read_image(harvard_path("MRI_PET", "PET"), modality="PET")
        assert plan_fusion(mri, pet).colormap is None  # RGB PET: the pseudo-colour path, as before
        result = fuse_images(mri, pet, method="maximum", device="cpu")
        assert result.colour_source == "image B" and result.colormap is None
        with pytest.raises(ParameterError, match="is RGB"):
            fuse_images(mri, pet, colormap="bmy")

    @pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
    def test_rgb_result_writes_three_components(
        self, patient: dict[str, Path], tmp_path: Path, suffix: str
    ) -> None:
        ct = read_image(patient["CT"], modality="CT")
        result = fuse_images(ct, read_image(patient["PET"], modality="PET"), device="cpu")
        path = write_image(result.image, tmp_path / f"fused{suffix}")
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        assert reader.GetNumberOfComponents() == 3
        back = read_image(path)
        assert back.is_rgb and back.same_grid(ct)
        np.testing.assert_array_equal(back.array, result.image.array)


# --- modality from the file -------------------------------------------------------------------------
class TestModalityFromMetadata:
    def test_header_fields_give_the_modality(self, patient: dict[str, Path], tmp_path: Path) -> None:
        pet = sitk.ReadImage(str(patient["PET"]))
        pet.SetMetaData("modality", "PT")
        sitk.WriteImage(pet, str(tmp_path / "pet.nrrd"))
        ct = sitk.ReadImage(str(patient["CT"]))
        ct.SetMetaData("ITK_FileNotes", "modality=CT")  # ITK writes it as the NIfTI descrip
        sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
        read_pet, read_ct = read_image(tmp_path / "pet.nrrd"), read_image(tmp_path / "ct.nii.gz")
        assert (read_pet.modality, read_pet.metadata["modality_from"]) == ("PET", "modality")
        assert (read_ct.modality, read_ct.metadata["modality_from"]) == ("CT", "descrip")
        assert read_image(tmp_path / "pet.nrrd", modality="SPECT").modality == "SPECT"  # the flag wins
        assert fuse_images(read_ct, read_pet, device="cpu").image.is_rgb

    def test_free_text_and_file_names_are_not_guessed_from(
        self, patient: dict[str, Path], tmp_path: Path
    ) -> None:
        pet = sitk.ReadImage(str(patient["PET"]))
        pet.SetMetaData("ITK_FileNotes", "FDG PET/CT study")
        sitk.WriteImage(pet, str(tmp_path / "PET_image.nii.gz"))
        assert read_image(tmp_path / "PET_image.nii.gz").modality is None
        assert read_image(patient["PET"]).modality is None


# --- the command ------------------------------------------------------------------------------------
class TestCommand:
    @pytest.mark.parametrize(("modality", "suffix"), [("CT", ".nrrd"), ("MR", ".nii.gz")])
    def test_fuse_gives_rgb_with_a_geometry_and_reports_the_table(
        self,
        patient: dict[str, Path],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        modality: str,
        suffix: str,
    ) -> None:
        out = tmp_path / f"fused{suffix}"
        code, stdout, err = run(
            capsys, "fuse", patient[modality], patient["PET"], "-o", out, "--modality-a", modality,
            "--modality-b", "PET", "--device", "cpu", "--json",
        )  # fmt: skip
        assert (code, err) == (0, "")
        record = json.loads(stdout)
        choice = recommended(modality, "PET")
        assert record["method"] == choice.method  # no --method: the recommended one
        assert record["colormap"] == choice.colormap and record["rgb"] is True
        fused, a = read_image(out), read_image(patient[modality])
        assert fused.is_rgb and fused.same_grid(a) and fused.array.dtype == np.float32

    def test_clinical_measures_of_the_command_output(
        self, patient: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Issue 13's targets on this crop: measured 0.955 conspicuity kept and 0.980 anatomy kept
        (gray laplacian_pyramid, the old default: 0.41 and 0.957)."""
        out = tmp_path / "fused.nii.gz"
        code, _, _ = run(
            capsys, "fuse", patient["CT"], patient["PET"], "-o", out, "--modality-a", "CT",
            "--modality-b", "PET", "--device", "cpu",
        )  # fmt: skip
        assert code == 0
        ct = read_image(patient["CT"], modality="CT")
        pet_on_ct = resample_to(read_image(patient["PET"]), ct).array
        mask = read_image(patient["CT_mask"]).array
        report = compute_clinical_metrics(
            ct, pet_on_ct, read_image(out).array, mask=mask, colormap=recommended("CT", "PET").colormap
        )
        assert report.values["conspicuity_kept"] >= 0.90, report.values
        assert report.values["anatomy_kept"] >= 0.95, report.values

    def test_colormap_none_equals_the_old_gray_path(
        self, patient: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        out = tmp_path / "gray.nii.gz"
        code, stdout, _ = run(
            capsys, "fuse", patient["CT"], patient["PET"], "-o", out, "--modality-a", "CT",
            "--modality-b", "PET", "--colormap", "none", "--device", "cpu", "--json",
        )  # fmt: skip
        assert code == 0
        record = json.loads(stdout)
        assert (record["method"], record["colormap"], record["rgb"]) == (DEFAULT_METHOD, None, False)
        ct = read_image(patient["CT"], modality="CT")
        expected = old_gray_path(ct, read_image(patient["PET"], modality="PET"))
        np.testing.assert_array_equal(read_image(out).array, expected)

    def test_explicit_method_keeps_the_colour(
        self, patient: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, stdout, _ = run(
            capsys, "fuse", patient["MR"], patient["PET"], "-o", tmp_path / "f.nrrd", "--modality-a", "MR",
            "--modality-b", "PET", "--method", "average", "--device", "cpu", "--json",
        )  # fmt: skip
        assert code == 0
        record = json.loads(stdout)
        assert (record["method"], record["colormap"]) == ("average", recommended("MR", "PET").colormap)

    def test_set_applies_over_the_recommended_parameters(
        self, patient: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        choice = recommended("CT", "PET")
        if not choice.parameters and choice.method != "uptake_average":
            pytest.skip("the recommended method has no parameter to set here")
        code, stdout, _ = run(
            capsys, "fuse", patient["CT"], patient["PET"], "-o", tmp_path / "f.nrrd", "--modality-a", "CT",
            "--modality-b", "PET", "--set", "weight=0.5", "--device", "cpu", "--json",
        )  # fmt: skip
        assert code == 0
        record = json.loads(stdout)
        assert record["method"] == "uptake_average" and record["parameters"]["weight"] == 0.5

    @pytest.mark.parametrize(
        ("extra", "culprit"),
        [
            (("--colormap", "jet"), "--colormap: unknown colour table 'jet'"),
            (("--colormap", "bmy"), "--colormap bmy: cannot colour-fuse"),
            (("--colormap", "bmy", "--modality-a", "CT", "--modality-b", "MR"), "--colormap bmy"),
        ],
    )
    def test_bad_colormap_is_one_line_exit_2(
        self, patient: dict[str, Path], tmp_path: Path, extra, culprit
    ) -> None:
        out = tmp_path / "f.nii.gz"
        done = subprocess.run(
            [sys.executable, "-m", "MedFusionLib.cli", "fuse", str(patient["CT"]), str(patient["PET"]), "-o", str(out),
             *extra],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("medfusion: error: ") and culprit in lines[0]
        assert "none" in lines[0] or "cannot colour-fuse" in lines[0]
        assert done.stdout == "" and not out.exists() and list(tmp_path.iterdir()) == []

    def test_colormaps_json_has_every_table(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, stdout, _ = run(capsys, "colormaps", "--json")
        assert code == 0
        tables = json.loads(stdout)
        assert list(tables) == list_colormaps()
        for name, table in tables.items():
            array = np.asarray(table)
            assert array.shape == (256, 3) and array.min() >= 0.0 and array.max() <= 1.0
            np.testing.assert_allclose(array, get_colormap(name))

    def test_colormaps_text_lists_every_table(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, stdout, _ = run(capsys, "colormaps")
        assert code == 0
        names = [line.split()[0] for line in stdout.splitlines() if line and not line.startswith(" ")]
        assert names == [*list_colormaps(), "none"]

    def test_methods_lists_the_functional_family(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, stdout, _ = run(capsys, "methods", "--json")
        assert code == 0
        assert "uptake_average" in {m["name"] for m in json.loads(stdout) if m["family"] == "functional"}

    def test_dicom_modalities_from_tags_give_colour(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        out = tmp_path / "fused.nrrd"
        code, stdout, _ = run(
            capsys,
            "fuse",
            DICOM / "CT" / "image",
            DICOM / "PET" / "image",
            "-o",
            out,
            "--device",
            "cpu",
            "--json",
        )
        assert code == 0
        record = json.loads(stdout)
        assert record["modalities"] == ["CT", "PET"]
        assert record["colormap"] == recommended("CT", "PET").colormap
        assert record["method"] == recommended("CT", "PET").method
        assert read_image(out).is_rgb


# --- the Slicer bridge -----------------------------------------------------------------------------
def test_mrml_fusion_of_pet_gives_a_colour_vector_volume(patient: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("slicer")
    from MedFusionLib import mrml

    with mrml.new_scene(view_size=(96, 96)) as headless:
        scene = headless.scene
        ct = mrml.volume_node_from_image(read_image(patient["CT"], modality="CT"), scene, "CT")
        pet = mrml.volume_node_from_image(read_image(patient["PET"], modality="PET"), scene, "PET")
        fused = mrml.fuse_volume_nodes(ct, pet, registration="none", device="cpu")
        assert fused.IsA("vtkMRMLVectorVolumeNode")
        assert fused.GetDisplayNode().IsA("vtkMRMLVectorVolumeDisplayNode")
        assert fused.GetAttribute("MedFusion.Colormap") == recommended("CT", "PET").colormap
        assert fused.GetAttribute("MedFusion.Method") == recommended("CT", "PET").method
        voxels = slicer_array(fused)
        assert voxels.dtype == np.uint8 and voxels.shape[-1] == 3
        mrml.show_fusion(fused)
        png = mrml.render_slice_views_png(scene, tmp_path / "views.png", layouts=("Red",))
        picture = np.asarray(PILImage.open(png).convert("RGB")).astype(int)
        assert (np.abs(picture[..., 0] - picture[..., 2]) > 40).mean() > 0.01  # shown as colour
        gray = mrml.fuse_volume_nodes(ct, pet, registration="none", device="cpu", colormap="none")
        assert not gray.IsA("vtkMRMLVectorVolumeNode") and gray.GetAttribute("MedFusion.Colormap") == ""


def slicer_array(node: object) -> np.ndarray:
    import slicer

    return slicer.util.arrayFromVolume(node)

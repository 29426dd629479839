"""The MRML bridge on a real MRML scene (slicer-core): geometry, fusion nodes, transforms, views."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DATA
from helpers import harvard_path, mni_path

slicer = pytest.importorskip("slicer")

from MedFusionLib import __version__, mrml  # noqa: E402
from MedFusionLib.errors import InputError  # noqa: E402
from MedFusionLib.image import Image  # noqa: E402

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


# --- helpers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def headless():
    with mrml.new_scene(view_size=(160, 160)) as scene:
        yield scene


def load_volume(scene, path: Path, *, name: str, storage=None, vector: bool = False):
    """Read a file into a new volume node with a Slicer storage node (as Slicer's loader does)."""
    storage = storage or slicer.vtkMRMLNRRDStorageNode()
    storage.SetFileName(str(path))
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode" if vector else "vtkMRMLScalarVolumeNode", name)
    assert storage.ReadData(node), f"Slicer could not read {path}"
    return node


def write_volume(node, path: Path) -> Path:
    storage = slicer.vtkMRMLNRRDStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    return path


def ijk_to_ras(node) -> np.ndarray:
    return mrml._ijk_to_ras(node)


def fingerprint(node) -> tuple[str, tuple[float, ...], str | None]:
    voxels = slicer.util.arrayFromVolume(node)
    return (
        hashlib.sha256(voxels.tobytes()).hexdigest(),
        tuple(ijk_to_ras(node).ravel()),
        node.GetTransformNodeID(),
    )


def assert_same_image(image: Image, reference: sitk.Image) -> None:
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(reference))
    np.testing.assert_allclose(image.spacing, reference.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.origin, reference.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(image.direction, reference.GetDirection(), atol=1e-6)


def assert_images_equal(a: Image, b: Image) -> None:
    np.testing.assert_array_equal(a.array, b.array)
    assert a.array.dtype == b.array.dtype
    assert a.same_grid(b)


@pytest.fixture(scope="module")
def small_mni(tmp_path_factory) -> dict[str, Path]:
    """Real SPM T1, T2 and PET templates at 4 mm (2x2x2 averaging) as NRRD files."""
    folder = tmp_path_factory.mktemp("mni4mm")
    paths = {}
    for name in ("spm_T1", "spm_T2", "spm_PET"):
        image = sitk.BinShrink(sitk.ReadImage(str(mni_path(name)), sitk.sitkFloat32), (2, 2, 2))
        paths[name] = folder / f"{name}.nrrd"
        sitk.WriteImage(image, str(paths[name]))
    return paths


def oblique_image(size: tuple[int, ...] = (40, 36, 12)) -> sitk.Image:
    """A crop of the real brain MR with a rotated (oblique) direction and an odd origin."""
    mr = sitk.ReadImage(str(mni_path("spm_T1")), sitk.sitkFloat32)
    crop = sitk.RegionOfInterest(mr, size, (25, 30, 40))
    rotation = sitk.VersorTransform((0.3, -0.5, 0.8), np.deg2rad(23.0))
    crop.SetDirection(rotation.GetMatrix())
    crop.SetOrigin((12.5, -7.25, 31.0))
    crop.SetSpacing((1.5, 2.0, 2.5))
    return crop


# --- geometry ----------------------------------------------------------------------------------
class TestGeometry:
    def test_nrrd_through_storage_node_equals_simpleitk(self, headless):
        path = DATA / "ct" / "brain_mr_brain1.nrrd"
        node = load_volume(headless.scene, path, name="brain MR")
        assert_same_image(mrml.image_from_volume_node(node), sitk.ReadImage(str(path)))

    def test_nifti_through_archetype_storage_node_is_the_same_world(self, headless):
        # Slicer's archetype reader may store the slices in the other order (k flipped, origin
        # moved to the other end); the voxels must still sit at the same world positions.
        path = mni_path("spm_T1")
        node = load_volume(
            headless.scene, path, name="T1 nifti", storage=slicer.vtkMRMLVolumeArchetypeStorageNode()
        )
        image = mrml.image_from_volume_node(node)
        reference = sitk.ReadImage(str(path))
        np.testing.assert_allclose(image.spacing, reference.GetSpacing(), atol=1e-6)
        lower, upper = image.world_bounds()
        ref_lower, ref_upper = Image.from_sitk(reference).world_bounds()
        np.testing.assert_allclose(lower, ref_lower, atol=1e-6)
        np.testing.assert_allclose(upper, ref_upper, atol=1e-6)
        on_grid = sitk.Resample(image.to_sitk(), reference, sitk.Transform(), sitk.sitkNearestNeighbor)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(on_grid), sitk.GetArrayFromImage(reference))

    def test_oblique_nrrd_keeps_direction(self, headless, tmp_path):
        reference = oblique_image()
        sitk.WriteImage(reference, str(tmp_path / "oblique.nrrd"))
        node = load_volume(headless.scene, tmp_path / "oblique.nrrd", name="oblique")
        image = mrml.image_from_volume_node(node)
        assert_same_image(image, reference)
        # and back: Image -> node -> Image is exact too
        again = mrml.image_from_volume_node(
            mrml.volume_node_from_image(image, headless.scene, "oblique copy")
        )
        assert_images_equal(again, image)

    def test_ras_matrix_is_lps_flipped(self, headless):
        image = Image.from_sitk(oblique_image())
        node = mrml.volume_node_from_image(image, headless.scene, "flip check")
        np.testing.assert_allclose(ijk_to_ras(node), FLIP @ image.index_to_world(), atol=1e-9)

    def test_single_oblique_slice_stays_3d(self, headless):
        image = Image.from_sitk(oblique_image(size=(40, 36, 1)))
        again = mrml.image_from_volume_node(mrml.volume_node_from_image(image, headless.scene, "one slice"))
        assert again.ndim == 3
        assert_images_equal(again, image)

    def test_2d_round_trip_through_node_and_file(self, headless, tmp_path):
        gray = sitk.ReadImage(str(harvard_path("MRI_CT", "MRI")))
        gray = sitk.VectorIndexSelectionCast(gray, 0)
        image = Image.from_sitk(gray, modality="MR").with_array(
            sitk.GetArrayFromImage(gray),
            spacing=(0.9, 1.1),
            origin=(-20.0, 13.5),
            direction=(np.cos(0.3), -np.sin(0.3), np.sin(0.3), np.cos(0.3)),
        )
        node = mrml.volume_node_from_image(image, headless.scene, "slice")
        assert node.IsA("vtkMRMLScalarVolumeNode") and node.GetImageData().GetDimensions()[2] == 1
        assert node.GetDisplayNode().GetColorNodeID() == mrml.GREY_COLOUR_NODE_ID
        again = mrml.image_from_volume_node(node)
        assert again.modality == "MR"
        assert_images_equal(again, image)
        read = load_volume(headless.scene, write_volume(node, tmp_path / "slice.nrrd"), name="slice read")
        assert_images_equal(mrml.image_from_volume_node(read), image.with_array(image.array, modality=None))

    def test_rgb_round_trip_through_vector_node_and_file(self, headless, tmp_path):
        rgb = Image.from_sitk(sitk.ReadImage(str(harvard_path("MRI_PET", "PET"))))
        rgb = rgb.with_array(rgb.array, spacing=(1.2, 1.2), origin=(5.0, -3.0))
        assert rgb.is_rgb
        node = mrml.volume_node_from_image(rgb, headless.scene, "PET rgb")
        assert node.IsA("vtkMRMLVectorVolumeNode")
        assert node.GetDisplayNode().IsA("vtkMRMLVectorVolumeDisplayNode")
        assert_images_equal(mrml.image_from_volume_node(node), rgb)
        read = load_volume(
            headless.scene, write_volume(node, tmp_path / "rgb.nrrd"), name="rgb read", vector=True
        )
        assert_images_equal(mrml.image_from_volume_node(read), rgb)

    def test_update_existing_node_and_unique_names(self, headless):
        image = Image.from_sitk(oblique_image())
        first = mrml.volume_node_from_image(image, headless.scene, "same name", attributes={"a": "1"})
        second = mrml.volume_node_from_image(image, headless.scene, "same name")
        assert first.GetName() != second.GetName()
        assert first.GetAttribute("a") == "1"
        updated = mrml.volume_node_from_image(
            image.with_array(image.array * 2), headless.scene, "x", node=first
        )
        assert updated is first and first.GetName() == "same name"
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(first), image.array * 2)

    def test_modality_from_dicom_attribute(self, headless):
        node = mrml.volume_node_from_image(Image.from_sitk(oblique_image()), headless.scene, "pet")
        node.SetAttribute("DICOM.Modality", "PT")
        assert mrml.image_from_volume_node(node).modality == "PET"
        node.SetAttribute("MedFusion.Modality", "CT")
        assert mrml.image_from_volume_node(node).modality == "CT"


# --- fusion on nodes ---------------------------------------------------------------------------
class TestFuseVolumeNodes:
    @pytest.mark.parametrize("registration", ["rigid", "none"])
    def test_output_node_inputs_untouched(self, headless, small_mni, registration):
        scene = headless.scene
        fixed = load_volume(scene, small_mni["spm_T1"], name="T1")
        moving = load_volume(scene, small_mni["spm_PET"], name="PET")
        before = fingerprint(fixed), fingerprint(moving)
        count = scene.GetNumberOfNodesByClass("vtkMRMLTransformNode")

        fused = mrml.fuse_volume_nodes(fixed, moving, registration=registration, device="cpu")

        assert (fingerprint(fixed), fingerprint(moving)) == before
        assert moving.GetParentTransformNode() is None
        assert scene.GetNodeByID(fused.GetID()) is fused
        assert fused.IsA("vtkMRMLScalarVolumeNode") and not fused.IsA("vtkMRMLVectorVolumeNode")
        assert fused.GetName().startswith("T1 + PET (laplacian_pyramid)")
        assert fused.GetImageData().GetDimensions() == fixed.GetImageData().GetDimensions()
        np.testing.assert_array_equal(ijk_to_ras(fused), ijk_to_ras(fixed))
        assert fused.GetAttribute("MedFusion.Method") == "laplacian_pyramid"
        assert isinstance(json.loads(fused.GetAttribute("MedFusion.Parameters")), dict)
        assert fused.GetAttribute("MedFusion.Registration") == registration
        assert fused.GetAttribute("MedFusion.Version") == __version__
        assert fused.GetAttribute("MedFusion.Device") == "cpu"
        assert fused.GetDisplayNode() is not None
        transform_id = fused.GetAttribute("MedFusion.TransformNodeID")
        if registration == "none":
            assert transform_id == ""
            assert scene.GetNumberOfNodesByClass("vtkMRMLTransformNode") == count
        else:
            transform = scene.GetNodeByID(transform_id)
            assert transform.IsA("vtkMRMLLinearTransformNode")
            assert transform.GetName().startswith("PET to T1 (rigid)")
        voxels = slicer.util.arrayFromVolume(fused)
        assert 0.0 <= voxels.min() and voxels.max() <= 1.0 and voxels.std() > 0.05

    def test_pseudo_colour_gives_vector_volume(self, headless):
        scene = headless.scene
        mri = mrml.volume_node_from_image(
            Image.from_sitk(
                sitk.VectorIndexSelectionCast(sitk.ReadImage(str(harvard_path("MRI_PET", "MRI"))), 0)
            ),
            scene,
            "MRI slice",
        )
        pet = mrml.volume_node_from_image(
            Image.from_sitk(sitk.ReadImage(str(harvard_path("MRI_PET", "PET")))), scene, "PET slice"
        )
        fused = mrml.fuse_volume_nodes(mri, pet, method="average", registration="none", device="cpu")
        assert fused.IsA("vtkMRMLVectorVolumeNode")
        assert fused.GetDisplayNode().IsA("vtkMRMLVectorVolumeDisplayNode")
        voxels = slicer.util.arrayFromVolume(fused)
        assert voxels.dtype == np.uint8 and voxels.shape == (1, 256, 256, 3)
        assert mrml.image_from_volume_node(fused).is_pseudo_colour

    def test_bad_input_names_the_culprit(self, headless, small_mni):
        scene = headless.scene
        fixed = load_volume(scene, small_mni["spm_T1"], name="T1 bad")
        moving = load_volume(scene, small_mni["spm_PET"], name="PET bad")
        with pytest.raises(InputError, match="fixed"):
            mrml.fuse_volume_nodes(None, moving)
        with pytest.raises(InputError, match="moving"):
            mrml.fuse_volume_nodes(fixed, None)
        with pytest.raises(InputError, match="'nope'"):
            mrml.fuse_volume_nodes(fixed, moving, method="nope")
        with pytest.raises(InputError, match="'sideways'"):
            mrml.fuse_volume_nodes(fixed, moving, registration="sideways")
        other = slicer.vtkMRMLScene()
        stranger = load_volume(other, small_mni["spm_PET"], name="elsewhere")
        with pytest.raises(InputError, match="one scene"):
            mrml.fuse_volume_nodes(fixed, stranger)


# --- transform convention ----------------------------------------------------------------------
class TestTransformConvention:
    def test_linear_node_is_inverse_in_ras(self, headless):
        euler = sitk.Euler3DTransform((10.0, -20.0, 5.0), 0.1, -0.05, np.deg2rad(10.0), (5.0, -2.0, 3.0))
        node = mrml.transform_node_from_transform(euler, headless.scene, "euler")
        assert node.IsA("vtkMRMLLinearTransformNode")
        to_parent = slicer.util.arrayFromVTKMatrix(node.GetMatrixTransformToParent())
        itk = np.eye(4)
        itk[:3, :3] = np.reshape(euler.GetMatrix(), (3, 3))
        itk[:3, 3] = euler.TransformPoint((0.0, 0.0, 0.0))
        np.testing.assert_allclose(to_parent, FLIP @ np.linalg.inv(itk) @ FLIP, atol=1e-9)
        assert headless.scene.GetNumberOfNodesByClass("vtkMRMLTransformStorageNode") == 0

    @pytest.mark.parametrize("kind", ["euler", "bspline"])
    def test_slicer_resampling_matches_engine(self, headless, small_mni, kind):
        scene = headless.scene
        fixed = load_volume(scene, small_mni["spm_T1"], name="T1 fixed")
        moving = load_volume(scene, small_mni["spm_T2"], name="T2 moving")
        fixed_itk, moving_itk = (
            sitk.ReadImage(str(small_mni["spm_T1"])),
            sitk.ReadImage(str(small_mni["spm_T2"])),
        )
        euler = sitk.Euler3DTransform((0.0, -18.0, 18.0), np.deg2rad(10.0), 0.0, 0.0, (5.0, 0.0, -3.0))
        transform: sitk.Transform = euler
        if kind == "bspline":
            bspline = sitk.BSplineTransformInitializer(fixed_itk, (3, 3, 3))
            rng = np.random.default_rng(7)
            bspline.SetParameters(tuple(rng.normal(0.0, 3.0, bspline.GetNumberOfParameters())))
            transform = sitk.CompositeTransform([euler, bspline])
        node = mrml.transform_node_from_transform(transform, scene, kind)
        assert node.IsA("vtkMRMLLinearTransformNode") == (kind == "euler")

        clone = headless.volumes_logic.CloneVolume(scene, moving, "T2 clone")
        clone.SetAndObserveTransformNodeID(node.GetID())
        resampled = headless.volumes_logic.ResampleVolumeToReferenceVolume(clone, fixed)
        slicer_voxels = slicer.util.arrayFromVolume(resampled).astype(np.float64)
        engine = sitk.GetArrayFromImage(sitk.Resample(moving_itk, fixed_itk, transform, sitk.sitkLinear))
        wrong = sitk.GetArrayFromImage(sitk.Resample(moving_itk, fixed_itk, euler.GetInverse()))

        assert moving.GetParentTransformNode() is None
        inside = engine > 0.05 * engine.max()
        assert np.corrcoef(slicer_voxels[inside], engine[inside])[0, 1] > 0.99
        # the test can fail: the inverse transform (the classic convention mistake) does not match
        assert np.corrcoef(slicer_voxels[inside], wrong[inside])[0, 1] < 0.95

    def test_2d_linear_transform_becomes_3d(self, headless):
        node = mrml.transform_node_from_transform(
            sitk.Euler2DTransform((1.0, 2.0), 0.2, (3.0, -4.0)), headless.scene, "flat"
        )
        to_parent = slicer.util.arrayFromVTKMatrix(node.GetMatrixTransformToParent())
        np.testing.assert_allclose(to_parent[2], [0.0, 0.0, 1.0, 0.0], atol=1e-12)
        with pytest.raises(InputError, match="2-D"):
            mrml.transform_node_from_transform(sitk.BSplineTransform(2), headless.scene, "flat bspline")


# --- slice views -------------------------------------------------------------------------------
class TestShowFusion:
    def test_layers_lut_and_picture(self, headless, small_mni, tmp_path):
        scene = headless.scene
        fixed = load_volume(scene, small_mni["spm_T1"], name="T1 view")
        moving = load_volume(scene, small_mni["spm_PET"], name="PET view")
        fused = mrml.fuse_volume_nodes(fixed, moving, registration="none", device="cpu")

        mrml.show_fusion(fused, foreground=moving, opacity=0.4)

        composites = list(mrml._nodes(scene, "vtkMRMLSliceCompositeNode"))
        assert len(composites) == 3
        overlay = scene.GetNodeByID(composites[0].GetForegroundVolumeID())
        assert (
            overlay.GetName() == "PET view (overlay)"
            and overlay.GetAttribute("MedFusion.OverlayOf") == moving.GetID()
        )
        assert overlay.GetImageData() == moving.GetImageData()  # shared voxels, not a copy
        for composite in composites:
            assert composite.GetBackgroundVolumeID() == fused.GetID()
            assert composite.GetForegroundVolumeID() == overlay.GetID()
            assert composite.GetForegroundOpacity() == pytest.approx(0.4)
            assert composite.GetLinkedControl() == 1
        assert overlay.GetDisplayNode().GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Heat"
        assert (
            moving.GetDisplayNode() is None
            or moving.GetDisplayNode().GetColorNodeID() != overlay.GetDisplayNode().GetColorNodeID()
        )
        assert overlay.GetTransformNodeID() is None  # registration "none": nothing to align
        mrml.show_fusion(fused, foreground=moving, opacity=0.4)
        assert (
            len(
                [
                    n
                    for n in mrml._nodes(scene, "vtkMRMLScalarVolumeNode")
                    if n.GetAttribute("MedFusion.OverlayOf")
                ]
            )
            == 1
        )
        red = scene.GetNodeByID("vtkMRMLSliceNodeRed")
        assert red.GetFieldOfView()[0] == pytest.approx(max(91 * 2, 109 * 2), abs=2.5)

        png = mrml.render_slice_views_png(scene, tmp_path / "views.png", size=(120, 100))
        from PIL import Image as PILImage

        picture = np.asarray(PILImage.open(png).convert("RGB")).astype(float)
        assert picture.shape == (100, 3 * 120 + 2 * 4, 3)
        assert picture.std() > 10
        red_tile = picture[:, :120]
        assert red_tile[40:60, 50:70].mean() > 4 * red_tile[:5, :5].mean() + 20  # the head, not the air
        # PET-Heat over gray: the blend is warm (red above blue) where the head is
        assert red_tile[40:60, 50:70, 0].mean() > red_tile[40:60, 50:70, 2].mean()

        mrml.show_fusion(fused, application_logic=headless.application_logic)
        for composite in composites:
            assert composite.GetForegroundVolumeID() is None

    def test_the_overlay_of_a_registered_moving_volume_sits_under_its_transform(self, headless, small_mni):
        scene = headless.scene
        fixed = load_volume(scene, small_mni["spm_T1"], name="T1 reg")
        moving = load_volume(scene, small_mni["spm_PET"], name="PET reg")
        fused = mrml.fuse_volume_nodes(fixed, moving, registration="rigid", device="cpu")
        mrml.show_fusion(fused, foreground=moving)
        overlay = scene.GetNodeByID(
            mrml._nodes(scene, "vtkMRMLSliceCompositeNode")[0].GetForegroundVolumeID()
        )
        assert fused.GetAttribute("MedFusion.TransformNodeID")
        assert overlay.GetTransformNodeID() == fused.GetAttribute("MedFusion.TransformNodeID")
        assert moving.GetTransformNodeID() is None

    def test_lut_by_id_and_unknown_lut(self, headless):
        scene = headless.scene
        node = mrml.volume_node_from_image(Image.from_sitk(oblique_image()), scene, "lut")
        mrml.show_fusion(node, foreground=node, foreground_lut="vtkMRMLPETProceduralColorNodePET-Rainbow2")
        overlay = scene.GetNodeByID(
            mrml._nodes(scene, "vtkMRMLSliceCompositeNode")[0].GetForegroundVolumeID()
        )
        assert overlay.GetDisplayNode().GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Rainbow2"
        with pytest.raises(InputError, match="'Sunset'.*PET-Heat"):
            mrml.show_fusion(node, foreground=node, foreground_lut="Sunset")
        with pytest.raises(InputError, match="opacity"):
            mrml.show_fusion(node, opacity=1.5)


# --- colour fusion in the slice views and the lesion readout (issue 13) -----------------------
STS019 = DATA / "sts" / "STS_019"


@pytest.fixture(scope="module")
def sts019(headless):
    """A real patient (STS_019: CT in HU, FDG-PET in SUV, the tumour on the CT's grid) as nodes."""
    from MedFusionLib.io import read_image

    scene = headless.scene
    ct = mrml.volume_node_from_image(read_image(STS019 / "CT_image.nii.gz", modality="CT"), scene, "STS CT")
    pet = mrml.volume_node_from_image(
        read_image(STS019 / "PET_image.nii.gz", modality="PET"), scene, "STS PET"
    )
    mask = read_image(STS019 / "CT_mask.nii.gz")
    label_map = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "STS tumour")
    slicer.util.updateVolumeFromArray(label_map, np.ascontiguousarray(mask.array.astype(np.uint8)))
    label_map.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(mrml._ras_matrix_of(mask)))
    fused = mrml.fuse_volume_nodes(ct, pet, registration="none", device="cpu")  # recommended colour fusion
    return {"ct": ct, "pet": pet, "label_map": label_map, "mask": mask, "fused": fused}


class TestColourInSliceViews:
    def test_rgb_volume_is_shown_with_its_own_colours(self, headless, tmp_path):
        scene = headless.scene
        voxels = np.zeros((3, 64, 64, 3), np.uint8)
        voxels[:, :32, :, 0] = (
            200  # the brightest component is 199-200: the automatic window would stretch it
        )
        voxels[:, 32:, :, 1] = 100
        voxels[:, :, :32, 2] = 50
        image = Image(
            array=voxels, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel())
        )
        node = mrml.volume_node_from_image(image, scene, "known colours")
        display = node.GetDisplayNode()
        assert display.IsA("vtkMRMLVectorVolumeDisplayNode") and not display.GetAutoWindowLevel()
        assert (display.GetWindow(), display.GetLevel()) == (255.0, 127.5)
        display.AutoWindowLevelOn()  # as Slicer's own loader leaves a vector volume: show_fusion fixes it
        mrml.show_fusion(node)
        png = mrml.render_slice_views_png(scene, tmp_path / "known.png", size=(64, 64), layouts=("Red",))
        from PIL import Image as PILImage

        shown = {
            tuple(int(c) for c in v) for v in np.asarray(PILImage.open(png).convert("RGB")).reshape(-1, 3)
        }
        for colour in [(200, 0, 50), (200, 0, 0), (0, 100, 50), (0, 100, 0)]:
            assert colour in shown, (colour, sorted(shown)[:12])
        assert not any(max(c) > 200 for c in shown)  # nothing brightened

    def test_colour_fusion_of_a_real_patient_is_colour_in_the_views(self, headless, sts019, tmp_path):
        fused = sts019["fused"]
        assert fused.IsA("vtkMRMLVectorVolumeNode") and fused.GetAttribute("MedFusion.Colormap")
        mrml.show_fusion(fused, application_logic=headless.application_logic)
        png = mrml.render_slice_views_png(headless.scene, tmp_path / "sts.png", size=(120, 120))
        from PIL import Image as PILImage

        picture = np.asarray(PILImage.open(png).convert("RGB")).astype(float)
        red = picture[:, :120]
        chroma = red.max(axis=-1) - red.min(axis=-1)
        # colour, not gray: the default table keeps the anatomy gray and colours the uptake
        # (measured: 11 % of the view's pixels with chroma > 40, 99th percentile 159; gray shows 0)
        assert (chroma > 40).mean() > 0.05 and np.percentile(chroma, 99) > 100
        # the colour fusion is shown as it is: no overlay over it
        for composite in mrml._nodes(headless.scene, "vtkMRMLSliceCompositeNode"):
            assert composite.GetBackgroundVolumeID() == fused.GetID()
            assert composite.GetForegroundVolumeID() is None


class TestClinicalReadout:
    def test_label_map_on_the_fixed_grid(self, sts019):
        from MedFusionLib.io import read_image
        from MedFusionLib.pipeline import fuse_images
        from MedFusionLib.readout import clinical_readout

        readout = mrml.clinical_readout(sts019["ct"], sts019["pet"], sts019["fused"], sts019["label_map"])
        assert readout["colormap"] == sts019["fused"].GetAttribute("MedFusion.Colormap")
        assert readout["modalities"] == ["CT", "PET"] and readout["notes"] == {}
        assert readout["lesion_voxels"] == int(np.count_nonzero(sts019["mask"].array))
        assert 0.6 < readout["conspicuity_kept"] < 1.3 and 0.85 < readout["anatomy_kept"] <= 1.0
        # the same as the engine on the files (the node holds the result in 8 bits)
        ct = read_image(STS019 / "CT_image.nii.gz", modality="CT")
        pet = read_image(STS019 / "PET_image.nii.gz", modality="PET")
        result = fuse_images(ct, pet, device="cpu")
        engine = clinical_readout(ct, pet, result.image, sts019["mask"], colormap=result.colormap)
        for key in ("conspicuity_kept", "anatomy_kept"):
            assert readout[key] == pytest.approx(engine[key], abs=0.01), key

    def test_segmentation_gives_the_label_map_readout(self, headless, sts019):
        scene = headless.scene
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "STS tumour segmentation")
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
            sts019["label_map"], segmentation
        )
        count = scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode")
        from_segmentation = mrml.clinical_readout(sts019["ct"], sts019["pet"], sts019["fused"], segmentation)
        from_label_map = mrml.clinical_readout(
            sts019["ct"], sts019["pet"], sts019["fused"], sts019["label_map"]
        )
        assert from_segmentation == from_label_map
        assert scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == count  # the export is removed
        empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing")
        with pytest.raises(InputError, match="no segment"):
            mrml.clinical_readout(sts019["ct"], sts019["pet"], sts019["fused"], empty)

    def test_gray_fusion_keeps_less_of_the_tumour_and_unknown_modality_is_refused(self, headless, sts019):
        from MedFusionLib.errors import ParameterError

        gray = mrml.fuse_volume_nodes(
            sts019["ct"], sts019["pet"], registration="none", device="cpu", colormap="none"
        )
        assert not gray.IsA("vtkMRMLVectorVolumeNode") and gray.GetAttribute("MedFusion.Colormap") == ""
        gray_readout = mrml.clinical_readout(sts019["ct"], sts019["pet"], gray, sts019["label_map"])
        colour_readout = mrml.clinical_readout(
            sts019["ct"], sts019["pet"], sts019["fused"], sts019["label_map"]
        )
        assert gray_readout["colormap"] is None
        assert gray_readout["conspicuity_kept"] < colour_readout["conspicuity_kept"] - 0.1
        with pytest.raises(ParameterError, match="one CT or MR and one PET or SPECT"):
            mrml.clinical_readout(
                sts019["ct"], sts019["pet"], gray, sts019["label_map"], modality_fixed="SPECT"
            )

    def test_registered_fusion_reads_its_transform(self, headless, sts019):
        fused = mrml.fuse_volume_nodes(sts019["ct"], sts019["pet"], registration="rigid", device="cpu")
        node = headless.scene.GetNodeByID(fused.GetAttribute("MedFusion.TransformNodeID"))
        transform = mrml.transform_from_transform_node(node)
        point = (10.0, -20.0, 30.0)
        again = mrml.transform_node_from_transform(transform, headless.scene, "again")
        np.testing.assert_allclose(
            slicer.util.arrayFromVTKMatrix(again.GetMatrixTransformToParent()),
            slicer.util.arrayFromVTKMatrix(node.GetMatrixTransformToParent()),
            atol=1e-6,
        )
        assert np.isfinite(transform.TransformPoint(point)).all()
        readout = mrml.clinical_readout(sts019["ct"], sts019["pet"], fused, sts019["label_map"])
        assert readout["conspicuity_kept"] is not None and readout["anatomy_kept"] > 0.8


class TestBackgroundJobOnNodes:
    """The Slicer module's Apply without Qt: one FusionJob on nodes, run in a separate process."""

    def test_round_trip_and_the_job_remembers_its_inputs(self, headless, small_mni, tmp_path):
        import time

        fixed = load_volume(headless.scene, small_mni["spm_T1"], name="T1")
        moving = load_volume(headless.scene, small_mni["spm_PET"], name="PET")
        runner, job = mrml.start_background_job(
            fixed, moving, workdir=tmp_path, registration="rigid", method="average", device="cpu"
        )
        assert job.fixed == str(tmp_path / "fixed.nrrd") and job.transform == str(tmp_path / "transform.h5")
        deadline = time.monotonic() + 120
        while not runner.finished:
            runner.poll()
            assert time.monotonic() < deadline, runner.stderr[-2000:]
            time.sleep(0.05)
        assert runner.returncode == 0, runner.error
        output = mrml.add_job_result_nodes(runner.result, fixed, moving)
        assert output.GetAttribute("MedFusion.Registration") == "rigid"
        assert output.GetAttribute("MedFusion.MovingNodeID") == moving.GetID()
        assert headless.scene.GetNodeByID(output.GetAttribute("MedFusion.TransformNodeID")) is not None
        headless.scene.RemoveNode(moving)
        with pytest.raises(InputError, match="moving volume was removed"):
            mrml.add_job_result_nodes(runner.result, fixed, moving)

    def test_a_bad_option_fails_before_anything_is_written(self, headless, small_mni, tmp_path):
        from MedFusionLib.errors import ParameterError

        fixed = load_volume(headless.scene, small_mni["spm_T1"], name="T1")
        moving = load_volume(headless.scene, small_mni["spm_PET"], name="PET")
        with pytest.raises(ParameterError, match="eps2"):
            mrml.start_background_job(fixed, moving, workdir=tmp_path, method="gff", parameters={"eps2": 0.0})
        assert list(tmp_path.iterdir()) == []

    def test_without_a_workdir_a_temporary_folder_is_made_and_removed_on_failure(
        self, headless, small_mni, tmp_path
    ):
        from MedFusionLib.errors import ParameterError

        fixed = load_volume(headless.scene, small_mni["spm_T1"], name="T1")
        moving = load_volume(headless.scene, small_mni["spm_PET"], name="PET")
        with pytest.raises(ParameterError, match="eps2"):
            mrml.start_background_job(
                fixed, moving, temporary=tmp_path, method="gff", parameters={"eps2": 0.0}
            )
        assert list(tmp_path.iterdir()) == []  # the folder it made is gone again
        runner, job = mrml.start_background_job(
            fixed, moving, temporary=tmp_path, registration="none", method="average", device="cpu"
        )
        runner.wait(timeout=120)
        assert runner.returncode == 0, runner.error
        assert runner.workdir.parent == tmp_path and runner.workdir.name.startswith("MedFusion-")
        assert Path(job.output).parent == runner.workdir and Path(job.output).is_file()


class TestSlicerModuleHelpers:
    """What the Slicer module's logic delegates to the bridge: sample data and showing a result."""

    def test_bundled_samples_carry_their_licence(self, headless):
        nodes = mrml.load_bundled_samples(headless.scene)
        assert [n.GetName() for n in nodes] == ["MedFusionT1", "MedFusionPET"]
        assert all(n.GetAttribute("MedFusion.License").startswith("GPL-2.0") for n in nodes)
        assert all(n.GetImageData().GetDimensions()[0] > 1 for n in nodes)
        for node in nodes:
            headless.scene.RemoveNode(node)

    def test_show_result_overlays_the_results_own_moving_volume_unless_it_is_in_colour(self, headless):
        scene = headless.scene
        rng = np.random.default_rng(0)
        fixed, moving, other = (
            mrml.volume_node_from_image(
                Image.from_array(rng.random((6, 8, 8)).astype(np.float32)), scene, name
            )
            for name in ("fixed", "moving", "other")
        )
        fused = mrml.volume_node_from_image(
            Image.from_array(rng.random((6, 8, 8)).astype(np.float32)), scene, "fused"
        )
        fused.SetAttribute("MedFusion.MovingNodeID", moving.GetID())
        composites = [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode") for i in range(3)]
        mrml.show_result(fused, show_foreground=True, opacity=0.3, fit=False)
        for composite in composites:
            assert composite.GetBackgroundVolumeID() == fused.GetID()
            overlay = scene.GetNodeByID(composite.GetForegroundVolumeID())
            assert overlay.GetAttribute("MedFusion.OverlayOf") == moving.GetID()  # not `other`
            assert composite.GetForegroundOpacity() == pytest.approx(0.3)
        mrml.show_result(fused, show_foreground=False, fit=False)
        assert all(c.GetForegroundVolumeID() is None for c in composites)
        fused.SetAttribute("MedFusion.Colormap", "neutral_heat")  # a colour fusion shows the PET already
        mrml.show_result(fused, show_foreground=True, fit=False)
        assert all(c.GetForegroundVolumeID() is None for c in composites)
        for node in (fixed, moving, other, fused):
            scene.RemoveNode(node)

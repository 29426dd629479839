"""CNN fusion: weights checked at load, training that learns, the CLI, and inference properties."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA
from helpers import harvard_gray, mni_volume
from PIL import Image

from MedFusionLib.benchmark.dataset import discover_pair_sets
from MedFusionLib.cnn.data import (
    CLINICAL_VALIDATION,
    VALIDATION_SLICES,
    FocusPatches,
    TrainingVolumes,
    write_validation_set,
)
from MedFusionLib.cnn.losses import fusion_loss
from MedFusionLib.cnn.networks import DenseFusionNet, SiameseFocusNet
from MedFusionLib.cnn.train import FocusRecipe, Recipe, train_focus_network, train_network
from MedFusionLib.cnn.weights import load_state_dict, read_manifest, save_state_dict, sha256_of
from MedFusionLib.errors import WeightsError
from MedFusionLib.fusion import fuse_tensors, list_methods
from MedFusionLib.fusion.cnn import focus_weight_map, similarity_rule

SHIPPED = "dense_fusion_net" in read_manifest()
LIU_SHIPPED = "liu_cnn" in read_manifest()


def tiny_volumes() -> TrainingVolumes:
    """Real MNI templates, 2 mm, as a two-pair training set."""
    names = ("spm_T1", "spm_PET", "spm_T2", "spm_SPECT")
    return TrainingVolumes(
        volumes={n: mni_volume(n) for n in names}, pairs=[("spm_T1", "spm_PET"), ("spm_T2", "spm_SPECT")]
    )


@pytest.fixture(scope="module")
def recipe_volumes() -> TrainingVolumes:
    """The recipe's training volumes (the MNI templates on the Colin27 1 mm grid)."""
    return TrainingVolumes.from_directory(DATA)


class TestWeights:
    def test_round_trip_and_refusals(self, tmp_path) -> None:  # noqa: ANN001
        net = DenseFusionNet()
        path = tmp_path / "w.safetensors"
        digest = save_state_dict(net.state_dict(), path)
        assert digest == sha256_of(path) and path.stat().st_size < 5 * 1024 * 1024
        state = load_state_dict(path, sha256=digest)
        assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())

        altered = bytearray(path.read_bytes())
        altered[-20] ^= 0xFF
        path.write_bytes(bytes(altered))
        with pytest.raises(WeightsError, match=r"w\.safetensors do not match their recorded SHA-256"):
            load_state_dict(path, sha256=digest)
        with pytest.raises(WeightsError, match="missing"):
            load_state_dict(tmp_path / "absent.safetensors", sha256=digest)

    def test_pickles_are_not_loaded(self, tmp_path) -> None:  # noqa: ANN001
        path = tmp_path / "evil.safetensors"
        torch.save({"net": DenseFusionNet()}, path)  # a pickled module: loading it would run code
        with pytest.raises(WeightsError, match="not a safetensors file"):
            load_state_dict(path, sha256=sha256_of(path))


class TestTraining:
    def test_a_few_steps_lower_the_loss_and_repeat_exactly(self, tmp_path) -> None:  # noqa: ANN001
        torch.set_num_threads(2)
        volumes = tiny_volumes()
        recipe = Recipe(epochs=4, steps_per_epoch=6, batch=4, crop=32, learning_rate=5e-3, seed=7)
        record = train_network(
            "dense_fusion_net", volumes=volumes, out=tmp_path / "a.safetensors", recipe=recipe
        )
        check = record["check_loss"]  # a fixed held-out batch, before and after training
        assert check["after"] < 0.8 * check["before"], check
        again = train_network(
            "dense_fusion_net", volumes=volumes, out=tmp_path / "b.safetensors", recipe=recipe
        )
        assert again["sha256"] == record["sha256"]  # same seed, same weights, bit for bit
        saved = json.loads((tmp_path / "a.safetensors.json").read_text(encoding="utf-8"))
        assert saved["sha256"] == sha256_of(tmp_path / "a.safetensors") and saved["recipe"]["seed"] == 7

    def test_batches_come_from_the_volumes_in_range(self) -> None:
        a, b = tiny_volumes().batch(np.random.default_rng(0), size=40, count=5)
        assert a.shape == b.shape == (5, 1, 40, 40)
        assert float(a.min()) >= 0 and float(a.max()) <= 1 and float(a.std()) > 0.05

    def test_training_never_draws_from_the_validation_slab(self, recipe_volumes) -> None:  # noqa: ANN001
        marked = {}  # the slab set to NaN: a crop touching it would show
        for name, volume in recipe_volumes.volumes.items():
            marked[name] = volume.copy()
            marked[name][VALIDATION_SLICES.start : VALIDATION_SLICES.stop] = np.nan
        training = TrainingVolumes(volumes=marked, pairs=recipe_volumes.pairs, parts=recipe_volumes.parts)
        a, b = training.batch(np.random.default_rng(11), size=96, count=300)
        assert bool(torch.isfinite(a).all() and torch.isfinite(b).all())
        unsplit = TrainingVolumes(volumes=marked, pairs=recipe_volumes.pairs)  # the control: no parts
        a, _ = unsplit.batch(np.random.default_rng(11), size=96, count=300)
        assert not bool(torch.isfinite(a).all())

    def test_validation_set_is_a_benchmark_folder_of_the_held_out_slices(  # noqa: ANN001
        self, recipe_volumes, tmp_path
    ) -> None:
        volumes = recipe_volumes
        sets = discover_pair_sets(write_validation_set(volumes, DATA, tmp_path))
        assert [(s.name, s.modality_a, s.modality_b) for s in sets] == [
            ("MRI_CT", "MRI", "CT"),
            ("MRI_PET", "MRI", "PET"),
            ("MRI_SPECT", "MRI", "SPECT"),
        ]
        assert all(len(s.pairs) == 4 * len(VALIDATION_SLICES) + len(CLINICAL_VALIDATION) for s in sets)
        index = VALIDATION_SLICES[5]
        pair = next(p for p in sets[1].pairs if p.id == f"colin27_ch2_1mm_z{index}")
        pet = np.asarray(Image.open(pair.path_b))
        assert pet.shape == (256, 256) and pet.dtype == np.uint8
        expected = np.round(255 * volumes.volumes["spm_PET"][index][::-1])
        y, x = (256 - expected.shape[0]) // 2, (256 - expected.shape[1]) // 2
        np.testing.assert_array_equal(pet[y : y + expected.shape[0], x : x + expected.shape[1]], expected)

    def test_loss_is_lowest_for_a_fusion_that_keeps_both_sources(self) -> None:
        a = torch.from_numpy(harvard_gray("MRI_PET", "MRI"))[None, None]
        b = torch.from_numpy(harvard_gray("MRI_PET", "PET"))[None, None]
        keep_both, _ = fusion_loss(torch.maximum(a, b), a, b)
        only_a, _ = fusion_loss(a, a, b)
        only_b, _ = fusion_loss(b, a, b)
        assert float(keep_both) < min(float(only_a), float(only_b))


class TestLiu:
    def test_focus_classifier_learns_which_patch_is_sharp(self, tmp_path) -> None:  # noqa: ANN001
        torch.set_num_threads(2)
        patches = FocusPatches.from_directory(DATA)
        a, b, labels = patches.batch(np.random.default_rng(3), count=64)
        assert a.shape == (64, 1, 16, 16) and set(labels.tolist()) == {0, 1}
        recipe = FocusRecipe(steps=250, batch=32, seed=5)
        record = train_focus_network(patches=patches, out=tmp_path / "liu.safetensors", recipe=recipe)
        check = record["check_accuracy"]  # 1024 held-out patch pairs
        assert check["after"] > 0.85 and check["after"] > check["before"] + 0.2, check

    def test_similarity_rule_blends_alike_bands_and_keeps_the_stronger_elsewhere(self) -> None:
        band = torch.from_numpy(harvard_gray("MRI_CT", "MRI")) - 0.5
        weight = torch.full_like(band, 0.3)
        np.testing.assert_allclose(similarity_rule(band, band, weight, threshold=0.6), band, atol=1e-6)
        opposite = similarity_rule(band, -0.5 * band, weight, threshold=0.6)  # M < 0: select by energy
        np.testing.assert_allclose(opposite, band, atol=1e-6)

    def test_weight_map_has_the_image_shape_and_probabilities(self) -> None:
        net = SiameseFocusNet()  # untrained: only shapes and the averaging are checked here
        a = torch.rand(37, 53)
        weights = focus_weight_map(net, a, a)
        assert weights.shape == a.shape and float(weights.min()) >= 0 and float(weights.max()) <= 1


class TestCommand:
    def test_train_command_writes_weights_and_record(self, tmp_path, capsys) -> None:  # noqa: ANN001
        from MedFusionLib.cli import main

        out = tmp_path / "net.safetensors"
        args = ["train", "dense_fusion_net", "--data", str(DATA), "--out", str(out)]
        code = main([*args, "--epochs", "1", "--steps", "2", "--batch", "2", "--crop", "32", "--json"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        record = json.loads(captured.out)
        assert record["sha256"] == sha256_of(out) and (tmp_path / "net.safetensors.json").exists()

    def test_train_command_refusals(self, tmp_path, capsys) -> None:  # noqa: ANN001
        from MedFusionLib.cli import main

        for args, culprit in (
            (["train", "resnet", "--data", str(DATA)], "resnet"),
            (["train", "dense_fusion_net", "--data", str(DATA / "harvard")], "Harvard"),
            (["train", "dense_fusion_net", "--data", str(tmp_path)], "SPM/MNI templates"),
            (["train", "dense_fusion_net", "--data", str(DATA), "--out", str(tmp_path / "w.bin")], "w.bin"),
        ):
            assert main(args) == 2
            err = capsys.readouterr().err
            assert culprit in err and len(err.strip().splitlines()) == 1
        assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not SHIPPED, reason="no trained weights ship yet")
class TestShippedNetwork:
    def test_registered_deterministic_and_fuse_x_x_is_x(self) -> None:
        assert "dense_fusion_net" in [m.name for m in list_methods()]
        a = torch.from_numpy(harvard_gray("MRI_CT", "MRI"))
        b = torch.from_numpy(harvard_gray("MRI_CT", "CT"))
        first = fuse_tensors(a, b, method="dense_fusion_net")
        assert torch.equal(first, fuse_tensors(a, b, method="dense_fusion_net"))
        same = fuse_tensors(a, a, method="dense_fusion_net")
        assert float((same - a).abs().mean()) < 0.05

    def test_volume_slices_along_an_axis(self) -> None:
        t1 = torch.from_numpy(mni_volume("spm_T1"))
        pet = torch.from_numpy(mni_volume("spm_PET"))
        fused = fuse_tensors(t1, pet, method="dense_fusion_net")
        assert fused.shape == t1.shape
        middle = fuse_tensors(t1[40], pet[40], method="dense_fusion_net")
        assert torch.allclose(fused[40], middle, atol=1e-5)  # axis 0: each slice alone
        other = fuse_tensors(t1, pet, method="dense_fusion_net", parameters={"axis": 2})
        assert other.shape == t1.shape and not torch.allclose(other, fused)

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
    def test_cuda_matches_cpu(self) -> None:
        a = torch.from_numpy(harvard_gray("MRI_PET", "MRI"))
        b = torch.from_numpy(harvard_gray("MRI_PET", "PET"))
        cpu = fuse_tensors(a, b, method="dense_fusion_net")
        gpu = fuse_tensors(a.cuda(), b.cuda(), method="dense_fusion_net").cpu()
        assert torch.allclose(cpu, gpu, atol=1e-4)


@pytest.mark.skipif(not LIU_SHIPPED, reason="no trained weights ship yet")
class TestShippedLiu:
    def test_sharp_source_leads_and_fusion_is_deterministic(self) -> None:
        import SimpleITK as sitk

        from MedFusionLib.fusion.cnn import network

        mri = harvard_gray("MRI_CT", "MRI")
        blurred = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(mri), 2.0))
        a, b = torch.from_numpy(mri), torch.from_numpy(blurred.astype(np.float32))
        weights = focus_weight_map(network("liu_cnn", torch.device("cpu")), a, b)
        head = a > 0.1
        assert float(weights[head].mean()) > 0.8  # the sharp MRI is chosen over its blurred copy
        first = fuse_tensors(a, b, method="liu_cnn")
        assert torch.equal(first, fuse_tensors(a, b, method="liu_cnn"))
        assert float((fuse_tensors(a, a, method="liu_cnn") - a).abs().max()) < 1e-4  # fuse(X, X) = X
        volume = fuse_tensors(
            torch.from_numpy(mni_volume("spm_T1")), torch.from_numpy(mni_volume("spm_PET")), method="liu_cnn"
        )
        assert volume.shape == (91, 109, 91)

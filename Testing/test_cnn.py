"""CNN fusion: weights checked at load, the information loss, training that learns and repeats, the CLI,
and the shipped networks' properties."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA
from helpers import harvard_gray, mni_volume

from MedFusionLib.cnn.data import (
    HELD_OUT_PATIENTS,
    MODALITY_PAIRS,
    PatientSlices,
    TrainingVolumes,
    contrast_window,
    pair_templates,
    pseudo_colour,
    pseudo_colour_luminances,
)
from MedFusionLib.cnn.losses import information_loss, visual_information_fidelity
from MedFusionLib.cnn.networks import GainFusionNet
from MedFusionLib.cnn.train import GainRecipe, train_gain_network
from MedFusionLib.cnn.weights import load_state_dict, read_manifest, save_state_dict, sha256_of
from MedFusionLib.errors import WeightsError
from MedFusionLib.fusion import fuse_tensors, get_method, list_methods
from MedFusionLib.metrics.compute import compute_metrics

SHIPPED = all(f"gain_fusion_net_{pair}" in read_manifest() for pair in MODALITY_PAIRS)


def tiny_templates() -> TrainingVolumes:
    """Real MNI templates, 2 mm, as an ordered MR-PET training set."""
    names = ("spm_T1", "spm_T2", "spm_PET")
    return TrainingVolumes(
        volumes={n: mni_volume(n) for n in names},
        pairs=[("spm_T1", "spm_PET"), ("spm_T2", "spm_PET")],
        ordered=True,
    )


def harvard_pair(set_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = (harvard_gray(set_name, m) for m in set_name.split("_"))
    return torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]


class TestWeights:
    def test_round_trip_and_refusals(self, tmp_path) -> None:  # noqa: ANN001
        net = GainFusionNet()
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
        torch.save({"net": GainFusionNet()}, path)  # a pickled module: loading it would run code
        with pytest.raises(WeightsError, match="not a safetensors file"):
            load_state_dict(path, sha256=sha256_of(path))


class TestInformationLoss:
    def test_vif_matches_the_reference_metric(self) -> None:
        a, b = (torch.round(255 * t) / 255 for t in harvard_pair("MRI_PET"))  # grey levels, as scored
        f = torch.maximum(a, b)
        grey = [np.round(255 * t[0, 0].numpy()) for t in (a, b, f)]
        reference = compute_metrics(*grey, metrics=["VIF"]).values
        part_a, part_b = visual_information_fidelity([a, b], f)
        assert float(part_a) == pytest.approx(reference["VIF_A"], rel=1e-4)
        assert float(part_b) == pytest.approx(reference["VIF_B"], rel=1e-4)

    def test_copying_one_source_loses_to_keeping_both(self) -> None:
        a, b = harvard_pair("MRI_SPECT")
        keep_both, _ = information_loss(torch.maximum(a, b), a, b)
        only_a, terms_a = information_loss(a, a, b)
        only_b, _ = information_loss(b, a, b)
        assert terms_a["VIF_A"] > 0.99 and terms_a["VIF_B"] < 0.2  # a copy keeps only itself
        assert float(keep_both) < min(float(only_a), float(only_b))

    def test_gradients_reach_the_network(self) -> None:
        a, b = harvard_pair("MRI_CT")
        net = GainFusionNet()
        loss, _ = information_loss(net(a, b), a, b)
        loss.backward()
        assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in net.parameters())


class TestTrainingData:
    def test_patients_are_axial_slices_in_range_without_the_held_out_ones(self) -> None:
        patients = PatientSlices.from_directory(DATA, modality_pair="MRI_PET")
        assert len(patients.patients) == 24 - len(HELD_OUT_PATIENTS)
        assert not set(HELD_OUT_PATIENTS) & set(patients.patients)
        a, b = patients.batch(np.random.default_rng(0), size=64, count=6)
        assert a.shape == b.shape == (6, 1, 64, 64)
        assert float(a.min()) >= 0 and float(b.max()) <= 1 and float(a.std()) > 0.05

    def test_pair_templates_keep_the_anatomical_image_first(self) -> None:
        volumes = TrainingVolumes.from_directory(DATA)
        ct = pair_templates(volumes, "MRI_CT")
        assert ct.ordered and {b for _, b in ct.pairs} == {"spm_Transm"}
        first, _ = ct.batch(np.random.default_rng(1), size=48, count=1)
        assert first.shape == (1, 1, 48, 48)

    def test_augmentations_stay_in_range_and_change_what_they_should(self) -> None:
        rng = np.random.default_rng(2)
        x = torch.linspace(0, 1, 64 * 64).view(1, 1, 64, 64).repeat(8, 1, 1, 1)
        windowed = contrast_window(rng, x, 1.0)
        assert float(windowed.min()) == 0 and float(windowed.max()) == 1
        assert not torch.equal(windowed, x)
        assert torch.equal(contrast_window(rng, x, 0.0), x)
        luminances = pseudo_colour_luminances()
        assert len(luminances) == 4 and all(t.shape == (256,) for t in luminances)
        coloured = pseudo_colour(rng, x, 1.0, luminances)
        assert float(coloured.min()) >= 0 and float(coloured.max()) <= 1 and not torch.equal(coloured, x)


class TestTraining:
    def test_a_few_steps_raise_the_kept_information_and_repeat_exactly(self, tmp_path) -> None:  # noqa: ANN001
        torch.set_num_threads(2)
        templates = tiny_templates()
        recipe = GainRecipe(steps=30, batch=4, crop=48, learning_rate=5e-3, seed=7, patients=0.0)
        record = train_gain_network(
            pair="MRI_PET", templates=templates, patients=None, out=tmp_path / "a.safetensors", recipe=recipe
        )
        check = record["check"]  # a fixed held-out batch, before and after training
        assert check["after"]["total"] < check["before"]["total"] - 0.1, check
        again = train_gain_network(
            pair="MRI_PET", templates=templates, patients=None, out=tmp_path / "b.safetensors", recipe=recipe
        )
        assert again["sha256"] == record["sha256"]  # same seed, same weights, bit for bit
        saved = json.loads((tmp_path / "a.safetensors.json").read_text(encoding="utf-8"))
        assert (
            saved["sha256"] == sha256_of(tmp_path / "a.safetensors") and saved["recipe"]["pair"] == "MRI_PET"
        )


class TestCommand:
    def test_train_command_writes_weights_and_record(self, tmp_path, capsys) -> None:  # noqa: ANN001
        from MedFusionLib.cli import main

        out = tmp_path / "net.safetensors"
        args = ["train", "gain_fusion_net", "--pair", "MRI_CT", "--data", str(DATA), "--out", str(out)]
        code = main([*args, "--steps", "2", "--batch", "2", "--crop", "48", "--json"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        record = json.loads(captured.out)
        assert record["sha256"] == sha256_of(out) and (tmp_path / "net.safetensors.json").exists()
        assert record["network"] == "gain_fusion_net_MRI_CT" and "18 shared patients" in record["data"]

    def test_train_command_refusals(self, tmp_path, capsys) -> None:  # noqa: ANN001
        from MedFusionLib.cli import main

        net = ["train", "gain_fusion_net", "--pair", "MRI_PET"]
        for args, culprit in (
            (["train", "resnet", "--data", str(DATA)], "resnet"),
            (["train", "gain_fusion_net", "--data", str(DATA)], "--pair"),
            ([*net[:2], "--pair", "CT_PET", "--data", str(DATA)], "CT_PET"),
            ([*net, "--data", str(DATA / "harvard")], "Harvard"),
            ([*net, "--data", str(tmp_path)], "SPM/MNI templates"),
            ([*net, "--data", str(DATA), "--out", str(tmp_path / "w.bin")], "w.bin"),
            ([*net, "--data", str(DATA), "--crop", "32"], "--crop"),
        ):
            assert main(args) == 2
            err = capsys.readouterr().err
            assert culprit in err and len(err.strip().splitlines()) == 1
        assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not SHIPPED, reason="no trained weights ship yet")
class TestShippedNetworks:
    def test_registered_with_one_set_of_weights_per_pair(self) -> None:
        names = [m.name for m in list_methods() if m.family == "cnn"]
        assert names == ["gain_fusion_net"]
        pair = next(p for p in get_method("gain_fusion_net").parameters if p.name == "pair")
        assert pair.choices == MODALITY_PAIRS and pair.default == "MRI_PET"
        a, b = (t[0, 0] for t in harvard_pair("MRI_CT"))
        by_pair = [
            fuse_tensors(a, b, method="gain_fusion_net", parameters={"pair": p}) for p in MODALITY_PAIRS
        ]
        assert not torch.equal(by_pair[0], by_pair[1])  # different weights, different fusions
        assert torch.equal(
            by_pair[0], fuse_tensors(a, b, method="gain_fusion_net", parameters={"pair": "MRI_CT"})
        )

    def test_keeps_both_sources_of_a_real_pair(self) -> None:
        a, b = (t[0, 0] for t in harvard_pair("MRI_PET"))
        fused = fuse_tensors(a, b, method="gain_fusion_net", parameters={"pair": "MRI_PET"})
        grey = [np.round(255 * t.numpy()) for t in (a, b, fused)]
        values = compute_metrics(*grey, metrics=["VIF"]).values
        copy = compute_metrics(grey[0], grey[1], grey[0], metrics=["VIF"]).values
        assert min(values["VIF_A"], values["VIF_B"]) > 2 * min(copy["VIF_A"], copy["VIF_B"])

    def test_volume_slices_along_an_axis(self) -> None:
        t1 = torch.from_numpy(mni_volume("spm_T1"))
        pet = torch.from_numpy(mni_volume("spm_PET"))
        fused = fuse_tensors(t1, pet, method="gain_fusion_net")
        assert fused.shape == t1.shape and float(fused.min()) >= 0 and float(fused.max()) <= 1
        middle = fuse_tensors(t1[40], pet[40], method="gain_fusion_net")
        assert torch.allclose(fused[40], middle, atol=1e-5)  # axis 0: each slice alone
        other = fuse_tensors(t1, pet, method="gain_fusion_net", parameters={"axis": 2})
        assert other.shape == t1.shape and not torch.allclose(other, fused)

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
    def test_cuda_matches_cpu(self) -> None:
        a, b = (t[0, 0] for t in harvard_pair("MRI_PET"))
        cpu = fuse_tensors(a, b, method="gain_fusion_net")
        gpu = fuse_tensors(a.cuda(), b.cuda(), method="gain_fusion_net").cpu()
        assert torch.allclose(cpu, gpu, atol=1e-4)


@pytest.mark.skipif(not SHIPPED, reason="no trained weights ship yet")
class TestWeightsFollowTheModalities:
    def test_fuse_images_picks_the_pair_from_the_modalities_unless_given(self) -> None:
        from helpers import mni_path

        from MedFusionLib.io import read_image
        from MedFusionLib.pipeline import fuse_images

        t1 = read_image(mni_path("spm_T1"), modality="MR")
        transmission = read_image(mni_path("spm_Transm"), modality="CT")
        spect = read_image(mni_path("spm_SPECT"), modality="SPECT")
        assert fuse_images(t1, transmission, method="gain_fusion_net").parameters["pair"] == "MRI_CT"
        chosen = fuse_images(t1, spect, method="gain_fusion_net", colormap="none").parameters["pair"]
        assert chosen == "MRI_SPECT"
        given = fuse_images(t1, transmission, method="gain_fusion_net", parameters={"pair": "MRI_PET"})
        assert given.parameters["pair"] == "MRI_PET"
        unknown = fuse_images(
            t1.with_array(t1.array, modality=None),
            transmission.with_array(transmission.array, modality=None),
            method="gain_fusion_net",
        )
        assert unknown.parameters["pair"] == "MRI_PET"  # the default

    def test_the_benchmark_fuses_each_set_with_its_own_weights(self) -> None:
        spec = get_method("gain_fusion_net")
        defaults = spec.resolve_parameters(None)
        assert spec.with_modality_pair(defaults, "MRI_SPECT")["pair"] == "MRI_SPECT"
        assert spec.with_modality_pair(defaults, "T1_T2") == defaults  # a set name that is no pair: defaults
        assert get_method("average").with_modality_pair({}, "MRI_CT") == {}


@pytest.mark.skipif(not SHIPPED, reason="no trained weights ship yet")
def test_the_shipped_training_run_starts_where_the_recipe_starts(tmp_path) -> None:  # noqa: ANN001
    """A cheap canary for `medfusion train` reproducing the shipped weights: the same initial
    weights on the same held-out check batch give the recorded loss before training (the full
    retraining, compared by SHA-256, is in Docs/models.md)."""
    from MedFusionLib.cli import main

    record = read_manifest()["gain_fusion_net_MRI_PET"]
    out = tmp_path / "w.safetensors"
    args = [
        "train",
        "gain_fusion_net",
        "--pair",
        "MRI_PET",
        "--data",
        str(DATA),
        "--out",
        str(out),
        "--steps",
        "1",
    ]
    assert main([*args, "--json"]) == 0
    started = json.loads(out.with_name(out.name + ".json").read_text(encoding="utf-8"))
    assert started["check"]["before"] == record["check"]["before"]
    assert started["config"] == record["config"]
    assert {k: v for k, v in started["recipe"].items() if k != "steps"} == {
        k: v for k, v in record["recipe"].items() if k != "steps"
    }

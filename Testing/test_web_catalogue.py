"""The browser app's catalogue: what it lists from a data folder, and what it refuses to open.

Real files only: the shipped sample folder (SPM templates, one sarcoma patient with masks) and
the STS_007 DICOM series of ``../shared/data/sts_dicom``. Scans that could block (a FIFO, link
loops) run in a thread with a deadline so that a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import gzip
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import DATA, ROOT

from MedFusionLib.errors import InputError, ParameterError
from MedFusionLib.web.catalogue import Catalogue, VolumeEntry, guess_modality, inside

SAMPLE = ROOT / "MedFusionLib" / "sample_data"
STS_DICOM = DATA / "sts_dicom"
DEADLINE_S = 60.0

SAMPLE_VOLUMES = {
    # key: (modality, dimensions, lesion)
    "spm_T1.nii.gz": ("MR", (91, 109, 91), None),
    "spm_PET.nii.gz": ("PET", (91, 109, 91), None),
    "spm_SPECT.nii.gz": ("SPECT", (91, 109, 91), None),
    "sts019_CT.nii.gz": ("CT", (136, 134, 47), "sts019_CT_mask.nii.gz"),
    "sts019_PET.nii.gz": ("PET", (28, 28, 47), None),
    "sts019_MR_T1.nii.gz": ("MR", (112, 110, 47), "sts019_MR_T1_mask.nii.gz"),
}
SAMPLE_MASKS = {"sts019_CT_mask.nii.gz": (136, 134, 47), "sts019_MR_T1_mask.nii.gz": (112, 110, 47)}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A writable copy of the sample folder, with an ``outside`` folder beside it (not in it)."""
    root = tmp_path / "data"
    root.mkdir()
    for name in (*SAMPLE_VOLUMES, *SAMPLE_MASKS):
        shutil.copyfile(SAMPLE / name, root / name)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(SAMPLE / "spm_PET.nii.gz", outside / "secret_PET.nii.gz")
    return root


@pytest.fixture
def sts_dicom() -> Path:
    if not STS_DICOM.is_dir():
        pytest.skip(f"DICOM reference data not found at {STS_DICOM}")
    return STS_DICOM


def scan_within(catalogue: Catalogue, seconds: float = DEADLINE_S) -> list[VolumeEntry]:
    """``catalogue.scan()`` in a daemon thread; fail (not hang) when it takes longer than ``seconds``."""
    result: list[list[VolumeEntry]] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(catalogue.scan())
        except BaseException as error:  # handed to the test thread
            failure.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"scan of {catalogue.root} still running after {seconds:.0f} s (blocked?)")
    if failure:
        raise failure[0]
    return result[0]


def refused(catalogue: Catalogue, key: object) -> str:
    """The one-line message ``entry(key)`` refuses ``key`` with."""
    with pytest.raises(InputError) as caught:
        catalogue.entry(key)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, message
    return message


def keys(entries: list[VolumeEntry]) -> list[str]:
    return [entry.key for entry in entries]


# --- the sample folder -----------------------------------------------------------------------------
def test_sample_folder_lists_volumes_with_modality_dimensions_and_lesions() -> None:
    catalogue = Catalogue(SAMPLE)
    entries = catalogue.scan()
    by_key = {entry.key: entry for entry in entries}
    assert sorted(by_key) == sorted([*SAMPLE_VOLUMES, *SAMPLE_MASKS])  # README, licences: not images
    for key, (modality, dimensions, lesion) in SAMPLE_VOLUMES.items():
        entry = by_key[key]
        assert (entry.modality, entry.dimensions, entry.lesion, entry.is_mask) == (
            modality,
            dimensions,
            lesion,
            False,
        )
        assert entry.path == (SAMPLE / key).resolve()
        assert entry.series is None
        assert entry.study == "." and entry.study_label == "sample_data"
        assert entry.label == f"{key} · {modality} · {'×'.join(map(str, dimensions))}"
    for key, dimensions in SAMPLE_MASKS.items():
        assert by_key[key].is_mask and by_key[key].dimensions == dimensions and by_key[key].lesion is None
    assert by_key["sts019_CT.nii.gz"].label == "sts019_CT.nii.gz · CT · 136×134×47"
    assert catalogue.skipped == []
    assert keys(entries) == sorted(keys(entries))  # one study: sorted by key
    assert keys(catalogue.volumes()) == sorted(SAMPLE_VOLUMES)
    assert catalogue.studies() == [(".", "sample_data")]
    assert catalogue.scan() == entries  # deterministic


def test_studies_are_folders_and_masks_pair_by_stem(folder: Path) -> None:
    patient = folder / "STS_019"
    patient.mkdir()
    shutil.copyfile(SAMPLE / "sts019_CT.nii.gz", patient / "CT_image.nii.gz")
    shutil.copyfile(SAMPLE / "sts019_CT_mask.nii.gz", patient / "CT_GTV.nii.gz")
    shutil.copyfile(SAMPLE / "sts019_PET.nii.gz", patient / "PET_image.nii.gz")
    shutil.copyfile(SAMPLE / "sts019_CT_mask.nii.gz", patient / "sts019_CT_mask.nii.gz")  # no CT beside it
    catalogue = Catalogue(folder)
    entries = catalogue.scan()
    assert catalogue.studies() == [(".", "data"), ("STS_019", "STS_019")]
    assert [entry.study for entry in entries] == sorted(entry.study for entry in entries)
    sub = {entry.key: entry for entry in catalogue.volumes("STS_019")}
    assert sorted(sub) == ["STS_019/CT_image.nii.gz", "STS_019/PET_image.nii.gz"]
    assert sub["STS_019/CT_image.nii.gz"].lesion == "STS_019/CT_GTV.nii.gz"  # _gtv, and _image dropped
    assert sub["STS_019/PET_image.nii.gz"].lesion is None
    assert sub["STS_019/PET_image.nii.gz"].modality == "PET"
    masks = [entry.key for entry in entries if entry.is_mask and entry.study == "STS_019"]
    assert masks == ["STS_019/CT_GTV.nii.gz", "STS_019/sts019_CT_mask.nii.gz"]
    # the root's CT keeps its own mask: association stays within a folder
    assert catalogue.entry("sts019_CT.nii.gz").lesion == "sts019_CT_mask.nii.gz"
    assert catalogue.volumes("no such study") == []


@pytest.mark.parametrize(
    ("name", "modality"),
    [
        ("sts019_MR_T1.nii.gz", "MR"),
        ("sts019_PET.nii.gz", "PET"),
        ("spm_T1.nii.gz", "MR"),
        ("spm_SPECT", "SPECT"),
        ("sts019_CT.nii.gz", "CT"),
        ("brain-flair.nrrd", "MR"),
        ("Patient1 T2W.mha", "MR"),
        ("fdg_scan.nii", "PET"),
        ("NM.bone", "SPECT"),
        ("pt3", None),
        ("spm_Transm.nii.gz", None),
        ("11.png", None),
        ("ctx_map.nii.gz", None),
    ],
)
def test_guess_modality(name: str, modality: str | None) -> None:
    assert guess_modality(name) == modality


def test_entry_limit(folder: Path) -> None:
    catalogue = Catalogue(folder, max_entries=3)
    entries = catalogue.scan()
    assert len(entries) == 3
    assert any("max_entries" in reason for _, reason in catalogue.skipped)
    assert len(Catalogue(folder, max_entries=8).scan()) == 8
    assert not Catalogue(folder, max_entries=8).skipped


@pytest.mark.parametrize("root", ["missing", "spm_T1.nii.gz"])
def test_root_must_be_an_existing_folder(folder: Path, root: str) -> None:
    with pytest.raises(InputError, match=root) as caught:
        Catalogue(folder / root)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_max_entries_must_be_positive(folder: Path, limit: object) -> None:
    with pytest.raises(ParameterError, match="max_entries"):
        Catalogue(folder, max_entries=limit)  # type: ignore[arg-type]


# --- keys, never paths ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        "../outside/secret_PET.nii.gz",
        "a/../../etc/passwd",
        "./spm_T1.nii.gz",
        "spm_T1.nii.gz\0",
        "spm_T1.nii.gz\n#",
        "",
        "no_such.nii.gz",
        "README.md",
    ],
)
def test_entry_refuses_what_is_not_a_key(folder: Path, key: str) -> None:
    catalogue = Catalogue(folder)
    catalogue.scan()
    message = refused(catalogue, key)
    assert message.startswith("unknown volume '") and message.endswith(f"(not in {catalogue.root})")


def test_entry_refuses_absolute_paths_and_non_strings(folder: Path) -> None:
    catalogue = Catalogue(folder)
    catalogue.scan()
    for key in (
        str(folder / "spm_T1.nii.gz"),
        str(folder.parent / "outside" / "secret_PET.nii.gz"),
        "/etc/passwd",
    ):
        assert refused(catalogue, key).startswith("unknown volume")
    for key in (None, 5, b"spm_T1.nii.gz", Path("spm_T1.nii.gz"), ["spm_T1.nii.gz"]):
        assert refused(catalogue, key).startswith("unknown volume <")
    assert catalogue.entry("spm_T1.nii.gz").path == (folder / "spm_T1.nii.gz").resolve()


def test_entry_scans_when_never_scanned(folder: Path) -> None:
    assert Catalogue(folder).entry("sts019_PET.nii.gz").modality == "PET"


def test_entry_refuses_a_file_that_vanished(folder: Path) -> None:
    catalogue = Catalogue(folder)
    catalogue.scan()
    (folder / "spm_T1.nii.gz").unlink()
    assert "spm_T1.nii.gz" in refused(catalogue, "spm_T1.nii.gz")
    catalogue.scan()
    assert refused(catalogue, "spm_T1.nii.gz").startswith("unknown volume")


def test_inside(folder: Path) -> None:
    root = folder.resolve()
    assert inside(root, folder / "spm_T1.nii.gz") == root / "spm_T1.nii.gz"
    (folder / "sub").mkdir()
    assert inside(root, folder / "sub" / ".." / "spm_T1.nii.gz") == root / "spm_T1.nii.gz"
    with pytest.raises(InputError, match=r"'\.\./outside/secret_PET\.nii\.gz' lies outside"):
        inside(root, folder / ".." / "outside" / "secret_PET.nii.gz")
    with pytest.raises(InputError, match="does not exist"):
        inside(root, folder / "missing.nii.gz")
    with pytest.raises(InputError, match="cannot be resolved"):
        inside(root, folder / "bad\0name")


# --- symbolic links ------------------------------------------------------------------------------
def test_links_leaving_the_root_are_never_listed_nor_opened(folder: Path) -> None:
    outside = folder.parent / "outside"
    (folder / "stolen_PET.nii.gz").symlink_to(outside / "secret_PET.nii.gz")
    (folder / "stolen_dir").symlink_to(outside, target_is_directory=True)
    (folder / "dotdot").symlink_to("..", target_is_directory=True)
    (folder / "etc_passwd.nii.gz").symlink_to("/etc/passwd")
    catalogue = Catalogue(folder)
    entries = scan_within(catalogue)
    assert sorted(keys(entries)) == sorted([*SAMPLE_VOLUMES, *SAMPLE_MASKS])
    assert all(entry.path.is_relative_to(catalogue.root) for entry in entries)
    skipped = dict(catalogue.skipped)
    for name in ("stolen_PET.nii.gz", "stolen_dir", "dotdot", "etc_passwd.nii.gz"):
        assert skipped[name] == "a link that leaves the data folder"
        assert refused(catalogue, name).startswith("unknown volume")
    assert refused(catalogue, "stolen_dir/secret_PET.nii.gz").startswith("unknown volume")
    assert not any("secret" in reason or str(outside) in reason for reason in skipped.values())


def test_links_inside_the_root_are_followed(folder: Path) -> None:
    store = folder / ".store" / "scans"
    store.mkdir(parents=True)
    shutil.copyfile(SAMPLE / "sts019_PET.nii.gz", store / "late_PET.nii.gz")
    (folder / "alias_T1.nii.gz").symlink_to("spm_T1.nii.gz")
    (folder / "shared").symlink_to(Path(".store") / "scans", target_is_directory=True)
    (folder / "real").mkdir()
    shutil.copyfile(SAMPLE / "spm_SPECT.nii.gz", folder / "real" / "spm_SPECT.nii.gz")
    (folder / "again").symlink_to("real", target_is_directory=True)  # a folder listed already
    catalogue = Catalogue(folder)
    by_key = {entry.key: entry for entry in scan_within(catalogue)}
    alias = by_key["alias_T1.nii.gz"]
    assert alias.path == (folder / "spm_T1.nii.gz").resolve() and alias.modality == "MR"
    assert catalogue.entry("alias_T1.nii.gz") == alias
    late = by_key["shared/late_PET.nii.gz"]  # the hidden folder only through the link's name
    assert late.path == store.resolve() / "late_PET.nii.gz" and late.study == "shared"
    assert catalogue.entry("shared/late_PET.nii.gz").dimensions == (28, 28, 47)
    assert "real/spm_SPECT.nii.gz" in by_key
    assert not any(key.startswith((".store", "again/")) for key in by_key)
    assert "again" in dict(catalogue.skipped)


def test_link_swapped_after_the_scan_is_refused(folder: Path) -> None:
    outside = folder.parent / "outside" / "secret_PET.nii.gz"
    (folder / "swap_PET.nii.gz").symlink_to("sts019_PET.nii.gz")
    catalogue = Catalogue(folder)
    catalogue.scan()
    assert catalogue.entry("swap_PET.nii.gz").path == (folder / "sts019_PET.nii.gz").resolve()
    (folder / "swap_PET.nii.gz").unlink()
    (folder / "swap_PET.nii.gz").symlink_to(outside)
    message = refused(catalogue, "swap_PET.nii.gz")
    assert "outside" in message and str(outside) not in message
    # a regular file replaced by a link to the outside
    (folder / "spm_PET.nii.gz").unlink()
    (folder / "spm_PET.nii.gz").symlink_to(outside)
    assert "lies outside" in refused(catalogue, "spm_PET.nii.gz")
    # a link swapped to another file inside: stale, so refused until scanned again
    (folder / "swap_PET.nii.gz").unlink()
    (folder / "swap_PET.nii.gz").symlink_to("spm_SPECT.nii.gz")
    assert "changed since the last scan" in refused(catalogue, "swap_PET.nii.gz")
    catalogue.scan()
    swapped = catalogue.entry("swap_PET.nii.gz")
    assert swapped.path == (folder / "spm_SPECT.nii.gz").resolve() and swapped.dimensions == (91, 109, 91)


def test_link_loops_end(folder: Path) -> None:
    (folder / "loop").symlink_to(".", target_is_directory=True)
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to("..", target_is_directory=True)
    (folder / "ping").symlink_to("pong")
    (folder / "pong").symlink_to("ping")
    (folder / "self.nii.gz").symlink_to("self.nii.gz")
    catalogue = Catalogue(folder)
    entries = scan_within(catalogue)
    assert sorted(keys(entries)) == sorted([*SAMPLE_VOLUMES, *SAMPLE_MASKS])
    skipped = dict(catalogue.skipped)
    assert skipped["ping"] == skipped["self.nii.gz"] == "a broken link or a link loop"
    assert "loop" in skipped and "sub/up" in skipped


# --- what is never opened or listed ----------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_is_never_opened(folder: Path) -> None:
    fifos = [folder / "pipe.nii.gz", folder / "pipe.dcm", folder / "pipe"]
    for fifo in fifos:
        os.mkfifo(fifo)
    (folder / "linked_pipe.nrrd").symlink_to("pipe")
    try:
        started = time.perf_counter()
        entries = scan_within(Catalogue(folder), seconds=30)
        assert time.perf_counter() - started < 30
    finally:  # a blocked reader (a regression) is released by a writer
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
    assert sorted(keys(entries)) == sorted([*SAMPLE_VOLUMES, *SAMPLE_MASKS])
    catalogue = Catalogue(folder)
    scan_within(catalogue)
    skipped = dict(catalogue.skipped)
    for name in ("pipe.nii.gz", "pipe.dcm", "pipe", "linked_pipe.nrrd"):
        assert skipped[name] == "a FIFO (named pipe), not a regular file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_detached_voxels_must_be_regular_files_inside_the_root(folder: Path) -> None:
    header = "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nElementDataFile = {}\n"
    (folder.parent / "outside" / "voxels.raw").write_bytes(bytes(8))
    (folder / "voxels.raw").write_bytes(bytes(8))
    os.mkfifo(folder / "voxels.fifo")
    (folder / "fine_CT.mhd").write_text(header.format("voxels.raw"))
    (folder / "escape_CT.mhd").write_text(header.format("../outside/voxels.raw"))
    (folder / "pipe_CT.mhd").write_text(header.format("voxels.fifo"))
    (folder / "pipe_MR.nhdr").write_text(
        "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: voxels.fifo\n\n"
    )
    try:
        catalogue = Catalogue(folder)
        by_key = {entry.key: entry for entry in scan_within(catalogue, seconds=30)}
    finally:
        try:
            os.close(os.open(folder / "voxels.fifo", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert by_key["fine_CT.mhd"].dimensions == (2, 2, 2) and by_key["fine_CT.mhd"].modality == "CT"
    skipped = dict(catalogue.skipped)
    assert "outside the data folder" in skipped["escape_CT.mhd"]
    assert "not a regular file" in skipped["pipe_CT.mhd"]
    assert "not a regular file" in skipped["pipe_MR.nhdr"]
    assert not {"escape_CT.mhd", "pipe_CT.mhd", "pipe_MR.nhdr"} & set(by_key)
    # the data file moved outside after the scan: entry() checks again
    (folder / "voxels.raw").unlink()
    (folder / "voxels.raw").symlink_to(folder.parent / "outside" / "voxels.raw")
    assert "outside the data folder" in refused(catalogue, "fine_CT.mhd")


def test_unreadable_headers_are_skipped_with_a_reason(folder: Path) -> None:
    (folder / "corrupt_CT.nii.gz").write_bytes(gzip.compress(b"this is not a NIfTI header" * 40))
    (folder / "garbage_MR.nii.gz").write_bytes(os.urandom(4096))
    (folder / "empty.nrrd").write_bytes(b"")
    (folder / "fake.png").write_bytes(b"not a png at all")
    (folder / "fake.jpg").write_bytes(b"not a jpeg either")
    (folder / "notes.txt").write_text("not an image, not listed, not a reason")
    (folder / ".hidden_CT.nii.gz").symlink_to("sts019_CT.nii.gz")
    catalogue = Catalogue(folder)
    entries = scan_within(catalogue)
    assert sorted(keys(entries)) == sorted([*SAMPLE_VOLUMES, *SAMPLE_MASKS])
    skipped = dict(catalogue.skipped)
    assert sorted(skipped) == ["corrupt_CT.nii.gz", "empty.nrrd", "fake.jpg", "fake.png", "garbage_MR.nii.gz"]
    for reason in skipped.values():
        assert reason and "\n" not in reason
    assert skipped["corrupt_CT.nii.gz"].startswith("cannot read its header")
    assert skipped["fake.png"] == "not a PNG file" and skipped["fake.jpg"] == "not a JPEG file"


# --- DICOM --------------------------------------------------------------------------------------
def test_dicom_series_from_real_folders(sts_dicom: Path) -> None:
    catalogue = Catalogue(sts_dicom)
    started = time.perf_counter()
    entries = scan_within(catalogue)
    elapsed = time.perf_counter() - started
    assert elapsed < 20, f"scanning {sts_dicom} took {elapsed:.1f} s (headers only should take seconds)"
    by_folder = {entry.key.partition("#")[0]: entry for entry in entries}
    assert sorted(by_folder) == ["STS_007/CT/image", "STS_007/MR_T1/image", "STS_007/PET/image"]
    expected = {"CT": ("CT", (249, 215, 70)), "MR_T1": ("MR", (226, 173, 69)), "PET": ("PET", (53, 45, 70))}
    study_uid = "1.3.6.1.4.1.14519.5.2.1.5168.1900.381397737790414481604846607090"
    for name, (modality, dimensions) in expected.items():
        entry = by_folder[f"STS_007/{name}/image"]
        assert (entry.modality, entry.dimensions, entry.is_mask, entry.lesion) == (
            modality,
            dimensions,
            False,
            None,
        )
        assert entry.key == f"STS_007/{name}/image#{entry.series}"
        assert entry.series and entry.series.startswith("1.3.6.1.4.1.14519.5.2.1.5168.1900.")
        assert entry.path == (sts_dicom / "STS_007" / name / "image").resolve()
        assert entry.study == study_uid
        assert entry.label.startswith(f"STS_007/{name}/image · {modality} · ")
        assert catalogue.entry(entry.key) == entry
    assert len({entry.series for entry in entries}) == 3
    assert catalogue.studies() == [(study_uid, "STS_007 · 2004-05-29")]
    skipped = dict(catalogue.skipped)
    assert sorted(key.partition("#")[0] for key in skipped) == [
        "STS_007/CT/mask",
        "STS_007/MR_T1/mask",
        "STS_007/PET/mask",
    ]
    assert set(skipped.values()) == {"a RTSTRUCT series, not an image"}
    assert refused(catalogue, "STS_007/CT/image").startswith("unknown volume")  # the folder alone is no key


def test_dicom_folder_with_two_series(sts_dicom: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "root" / "mixed"
    mixed.mkdir(parents=True)
    for modality in ("CT", "PET"):
        for source in sorted((sts_dicom / "STS_007" / modality / "image").iterdir())[:5]:
            shutil.copyfile(source, mixed / f"{modality}_{source.name}")
    (mixed / "notes.txt").write_text("not DICOM")
    catalogue = Catalogue(tmp_path / "root")
    entries = scan_within(catalogue)
    assert len(entries) == 2
    by_modality = {entry.modality: entry for entry in entries}
    assert set(by_modality) == {"CT", "PET"}
    assert by_modality["CT"].dimensions == (249, 215, 5) and by_modality["PET"].dimensions == (53, 45, 5)
    for entry in entries:
        assert entry.key == f"mixed#{entry.series}" and entry.path == mixed.resolve()
    assert by_modality["CT"].series != by_modality["PET"].series
    # a link in the folder that leaves the root makes its series unsafe to read: left out
    (mixed / ".outside.dcm").symlink_to(next((sts_dicom / "STS_007" / "MR_T1" / "image").iterdir()))
    assert "leave" in refused(catalogue, by_modality["CT"].key)
    assert scan_within(catalogue) == []
    assert "links that leave" in dict(catalogue.skipped)["mixed"]

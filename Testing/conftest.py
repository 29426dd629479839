"""Shared fixtures: paths to the reference data in ``../shared/data``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from web_server import free_port

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``../shared/data`` beside the project (CI has it there)."""
    if not DATA.is_dir():
        pytest.fail(f"reference data not found at {DATA}")
    return DATA


# --- DICOM tools from Debian: dciodvfy (dicom3tools) and a real Orthanc PACS -----------------
# pip cannot install them. When they are missing and this runs as root with apt-get (CI, a
# developer's container), the session installs the Debian packages once; otherwise the tests
# that need them are skipped with the reason (pytest -ra prints it).
DEBIAN_TOOLS = {"dciodvfy": "dicom3tools", "Orthanc": "orthanc"}


def _apt_install(packages: list[str], *, why: str) -> None:
    """Install Debian ``packages`` as root with apt-get, or skip the test saying ``why`` they are needed."""
    import os
    import shutil
    import subprocess

    wanted = " ".join(packages)
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{why}: not root with apt-get; apt-get install {wanted}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    result = None
    for command in (install, ["apt-get", "update", "-q"], install):
        try:
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            pytest.skip(f"{why}: {' '.join(command[:2])} {wanted} took more than 15 minutes")
        if command is install and result.returncode == 0:
            return
    assert result is not None
    last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
    pytest.skip(f"{why}: cannot install {wanted} with apt-get: {last[0]}")


def _debian_tool(binary: str) -> str:
    """The path of ``binary``, installing its Debian package first when possible; else skip."""
    import shutil

    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if found:
        return found
    _apt_install(sorted(set(DEBIAN_TOOLS.values())), why=f"{binary} not found")
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if not found:
        pytest.skip(f"{binary} still missing after apt-get install {DEBIAN_TOOLS[binary]}")
    return found


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    """The path of dicom3tools' ``dciodvfy`` (the DICOM IOD validator)."""
    return _debian_tool("dciodvfy")


class OrthancServer:
    """A real Orthanc on loopback: its AE title, DICOM port and REST API."""

    ae_title = "ORTHANC"

    def __init__(self, http_port: int, dicom_port: int) -> None:
        self.http_port, self.dicom_port = http_port, dicom_port

    @property
    def peer(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.dicom_port}"

    def rest(self, path: str, method: str = "GET") -> object:
        """GET (or DELETE) a REST resource as JSON (Orthanc's REST API, no authentication)."""
        import json
        import urllib.request

        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", method=method)
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = answer.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def clear(self) -> None:
        """Delete every patient (each test starts with an empty archive)."""
        for patient in self.rest("/patients"):
            self.rest(f"/patients/{patient}", method="DELETE")


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> object:
    """Start Orthanc on free loopback ports with a private database; stop it at the end.

    It checks the called AE title (so a wrong one is rejected), accepts C-STORE and C-FIND
    from any caller, and refuses the storage SOP classes it does not know (``UnknownSopClassAccepted``
    false: their presentation contexts are rejected, so such an instance is not stored).
    """
    import json
    import subprocess
    import time
    import urllib.error

    binary = _debian_tool("Orthanc")
    folder = tmp_path_factory.mktemp("orthanc")
    for _attempt in range(3):
        server = OrthancServer(free_port(), free_port())
        config = {
            "Name": "MedFusionTest",
            "StorageDirectory": str(folder / "db"),
            "IndexDirectory": str(folder / "db"),
            "HttpPort": server.http_port,
            "DicomPort": server.dicom_port,
            "DicomAet": server.ae_title,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowEcho": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "Plugins": [],
            "UnknownSopClassAccepted": False,
            "StableAge": 1,
            "SaveJobs": False,
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 (kept open while Orthanc runs)
        process = subprocess.Popen(
            [binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                server.rest("/system")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        if process.poll() is None and time.monotonic() < deadline:
            break
        process.kill()
        process.wait()
        log.close()
    else:
        tail = (folder / "orthanc.log").read_text(errors="replace").strip().splitlines()[-3:]
        pytest.fail(f"Orthanc did not start: {' | '.join(tail)}")
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


QT_PANEL_TESTS = ("test_dicom.py::test_slicer_panel_sends_the_result_to_the_pacs",)
"""Tests that create the session's QApplication, run last: a QApplication sets the C library's
locale once (from the environment) when it is made, and some image libraries reset it to "C"
later, so that the Slicer panel tests, which read text files with the locale's encoding, must be
the first to make it (they run after these tests' files alphabetically)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move :data:`QT_PANEL_TESTS` to the end of the session (their order is otherwise kept)."""
    last = [item for item in items if item.nodeid.endswith(QT_PANEL_TESTS)]
    if last:
        items[:] = [item for item in items if item not in last] + last


# --- the web app's browser tests: Debian's Chromium and Mesa's EGL for headless rendering -----
WEB_PACKAGES = ("chromium", "libegl1", "libegl-mesa0", "libgl1-mesa-dri")
"""What the browser tests need from Debian: the browser Playwright drives, and the EGL/Mesa
libraries with which the server renders its slice views without a display."""


def _debian_installed(package: str) -> bool:
    import shutil
    import subprocess

    if not shutil.which("dpkg-query"):
        return False
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return result.returncode == 0 and result.stdout.strip().endswith("installed")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's Chromium (installed with the EGL libraries when root; else skip)."""
    import shutil

    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra has it)")
    missing = [package for package in WEB_PACKAGES if not _debian_installed(package)]
    if missing and not shutil.which("chromium"):
        _apt_install(missing, why="the browser tests need Chromium and EGL")
    elif missing:
        _apt_install(missing, why="the web server needs EGL to render without a display")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("Chromium still missing after apt-get install chromium")
    return found

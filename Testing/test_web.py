"""``medfusion serve`` end to end: a real server process, a real Chromium driven by Playwright.

The server is started as a user would (``medfusion serve --data DIR --port P``) on a free
loopback port with the shipped demo data (a real patient, TCIA STS_019) plus a 2-D slice and a
symlink that leads out of the data folder. It renders its slice views offscreen (EGL, no
display). The browser is Debian's Chromium (``conftest.chromium`` installs it when root, else
the browser tests skip with the reason); the HTTP security tests need no browser.

Set ``MEDFUSION_WEB_SCREENSHOT=PATH`` to keep the page's screenshot after Apply (the one in
``Docs/web.md``).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "trame_slicer", reason="trame-slicer is not installed (the web extra; the test extra has it)"
)

from web_server import Server  # noqa: E402

from MedFusionLib.slicer_support import bundled_sample_paths  # noqa: E402

SAMPLES = Path(next(iter(bundled_sample_paths().values()))).parent
SLICE_2D = "slice_CT.png"
OUTSIDE_LINK = "outside_T1.nii.gz"


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink() and "medfusion-results" not in p.parts
    }


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The shipped demo data, a 2-D CT slice, and a symlink to a file outside the folder."""
    folder = tmp_path_factory.mktemp("web") / "data"
    folder.mkdir()
    for path in sorted(SAMPLES.iterdir()):
        if path.name.endswith(".nii.gz"):
            shutil.copyfile(path, folder / path.name)
    slices = sorted((data_dir / "harvard_val" / "MRI_CT" / "CT").glob("*.png"))
    shutil.copyfile(slices[0], folder / SLICE_2D)
    outside = tmp_path_factory.mktemp("outside") / "secret_T1.nii.gz"
    shutil.copyfile(SAMPLES / "spm_T1.nii.gz", outside)
    (folder / OUTSIDE_LINK).symlink_to(outside)
    return folder


@pytest.fixture(scope="module")
def server(demo_data: Path) -> Iterator[Server]:
    running = Server(demo_data)
    yield running
    running.stop()


# --- security over HTTP ------------------------------------------------------------------------
class TestSecurity:
    def test_loopback_serves_the_page_but_no_file_of_the_data_folder(self, server: Server) -> None:
        status, body, _ = server.get("/index.html")
        assert status == 200 and b"<html" in body.lower()
        for path in (
            "/sts019_CT.nii.gz",
            "/../../../../etc/passwd",
            "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/..%2f..%2f..%2fetc%2fpasswd",
            f"/{OUTSIDE_LINK}",
        ):
            status, body, _ = server.get(path)
            assert status >= 400 and b"root:" not in body, path

    def test_another_host_name_and_another_sites_websocket_are_refused(self, server: Server) -> None:
        assert server.get("/index.html", headers={"Host": "attacker.example"})[0] == 400
        assert server.websocket_status(origin="http://attacker.example") == 403
        assert server.websocket_status(origin=f"http://127.0.0.1:{server.port}") == 101

    def test_no_upload_route(self, server: Server) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/upload", data=b"x" * 100, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code in (404, 405)

    def test_beyond_loopback_a_token_is_generated_and_required(self, demo_data: Path) -> None:
        remote = Server(demo_data, host="0.0.0.0")
        try:
            assert remote.url is not None
            token = re.search(r"token=([\w-]+)", remote.url)
            assert token is not None and len(token.group(1)) >= 16
            assert any("token was generated" in line for line in remote.lines)
            assert remote.get("/index.html")[0] == 401
            assert remote.get("/index.html?token=wrong-token-of-enough-length")[0] == 401
            status, _, headers = remote.get(f"/index.html?token={token.group(1)}")
            assert status == 200 and "HttpOnly" in headers.get("Set-Cookie", "")
            cookie = f"medfusion_token={token.group(1)}"
            assert remote.get("/index.html", headers={"Cookie": cookie})[0] == 200
            same_origin = f"http://127.0.0.1:{remote.port}"
            assert remote.websocket_status(origin=same_origin) == 401  # no token: no websocket
            assert remote.websocket_status(origin=same_origin, cookie=cookie) == 101
        finally:
            remote.stop()

    def test_https_with_a_certificate(self, demo_data: Path, tmp_path: Path) -> None:
        import ssl

        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("openssl is needed to make a test certificate")
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
            + ["-days", "1", "-subj", "/CN=127.0.0.1"],
            capture_output=True,
            check=True,
        )
        secure = Server(
            demo_data, "--token", "a-chosen-token-0123456789", "--tls-cert", str(cert), "--tls-key", str(key)
        )
        try:
            assert secure.url is not None and secure.url.startswith("https://127.0.0.1:")
            context = ssl.create_default_context(cafile=str(cert))
            context.check_hostname = False
            with urllib.request.urlopen(secure.url, context=context, timeout=30) as answer:
                assert answer.status == 200 and "Secure" in answer.headers.get("Set-Cookie", "")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(
                    f"https://127.0.0.1:{secure.port}/index.html", context=context, timeout=30
                )
            assert refused.value.code == 401  # a token given on loopback is required too
        finally:
            secure.stop()

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            (["--data", "/nonexistent/folder"], "data folder /nonexistent/folder does not exist"),
            (["--token", "short"], "--token must have at least 16 characters"),
            (["--port", "70000"], "--port must be in [0, 65535]"),
            (["--device", "tpu"], "--device"),
            (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "--tls-cert file"),
            (["--tls-cert", "/nonexistent.pem"], "--tls-cert and --tls-key go together"),
        ],
    )
    def test_bad_options_are_one_line_and_exit_2(
        self, demo_data: Path, arguments: list[str], message: str
    ) -> None:
        command = [sys.executable, "-m", "MedFusionLib.cli", "serve", "--data", str(demo_data), *arguments]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("medfusion: error:") and message in lines[0]


# --- the page in Chromium ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def page(server: Server, chromium: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1500, "height": 800})
        tab.set_default_timeout(60_000)
        assert server.url is not None
        tab.goto(server.url)
        tab.get_by_test_id("fixed-select").wait_for()
        yield tab
        browser.close()


def _pixels(page: object, test_id: str) -> np.ndarray:
    from PIL import Image

    shot = page.get_by_test_id(test_id).screenshot()  # type: ignore[attr-defined]
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(np.int16)


def _apply(page: object) -> str:
    """Press Apply and wait for the outcome of this press: ``done``, ``cancelled`` or an error."""
    runs = int(page.get_by_test_id("status").get_attribute("data-run"))  # type: ignore[attr-defined]
    page.get_by_test_id("apply").click()  # type: ignore[attr-defined]
    return _finish(page, runs + 1)


def _finish(page: object, run: int) -> str:
    """Wait until press number ``run`` has ended; returns the status."""
    page.wait_for_function(  # type: ignore[attr-defined]
        "(run) => { const e = document.querySelector('[data-testid=status]');"
        " const t = e.textContent.trim();"
        " return Number(e.dataset.run) >= run && (t === 'done' || t === 'cancelled' || t.startsWith('error:')); }",
        arg=run,
        timeout=120_000,
    )
    return page.get_by_test_id("status").text_content().strip()  # type: ignore[attr-defined]


def _views_settled(page: object) -> dict[str, np.ndarray]:
    """The three views once two screenshots 0.3 s apart agree (the images have arrived)."""
    deadline = time.monotonic() + 20
    previous = {name: _pixels(page, f"view-{name}") for name in ("axial", "sagittal", "coronal")}
    while True:
        time.sleep(0.3)
        current = {name: _pixels(page, f"view-{name}") for name in previous}
        if all(np.array_equal(previous[n], current[n]) for n in current) or time.monotonic() > deadline:
            return current
        previous = current


def _chroma(pixels: np.ndarray) -> np.ndarray:
    return pixels.max(axis=2) - pixels.min(axis=2)


def _centre(pixels: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    height, width = pixels.shape[:2]
    dy, dx = int(height * fraction / 2), int(width * fraction / 2)
    return pixels[height // 2 - dy : height // 2 + dy, width // 2 - dx : width // 2 + dx]


def _choose(page: object, fixed: str, moving: str, **others: str) -> None:
    page.get_by_test_id("fixed-select").select_option(fixed)  # type: ignore[attr-defined]
    page.get_by_test_id("moving-select").select_option(moving)  # type: ignore[attr-defined]
    for test_id, value in others.items():
        page.get_by_test_id(test_id.replace("_", "-")).select_option(value)  # type: ignore[attr-defined]


class TestPage:
    """In order: the list, a real-patient fusion, opacity, a bad choice, cancel, save."""

    def test_the_page_lists_the_volumes_of_the_folder_only(self, page: object) -> None:
        options = page.get_by_test_id("fixed-select").locator("option").all()  # type: ignore[attr-defined]
        values = [option.get_attribute("value") for option in options]
        assert {"sts019_CT.nii.gz", "sts019_PET.nii.gz", "sts019_MR_T1.nii.gz", SLICE_2D} <= set(values)
        assert OUTSIDE_LINK not in values and "sts019_CT_mask.nii.gz" not in values
        # the pair offered first: one patient's anatomy and function, volumes before 2-D slices
        assert page.get_by_test_id("fixed-select").input_value() == "sts019_CT.nii.gz"  # type: ignore[attr-defined]
        assert page.get_by_test_id("moving-select").input_value() == "sts019_PET.nii.gz"  # type: ignore[attr-defined]
        assert page.locator("input[type=file]").count() == 0  # type: ignore[attr-defined]
        from MedFusionLib.web.app import TEST_IDS

        for test_id in TEST_IDS:  # every hook the issue names, exactly once
            assert page.get_by_test_id(test_id).count() == 1, test_id  # type: ignore[attr-defined]

    def test_apply_fuses_the_real_patient_and_colours_the_tumour(self, page: object, demo_data: Path) -> None:
        before = _digests(demo_data)
        _choose(page, "sts019_CT.nii.gz", "sts019_PET.nii.gz")
        # the CT's own tumour mask is picked for the readout
        page.wait_for_function(  # type: ignore[attr-defined]
            "() => document.querySelector('[data-testid=lesion-select]').value === 'sts019_CT_mask.nii.gz'"
        )
        assert _apply(page) == "done"
        assert "uptake_average" in page.get_by_test_id("message").text_content()  # type: ignore[attr-defined]
        page.get_by_test_id("readout").filter(has_text="conspicuity kept 0.").wait_for()  # type: ignore[attr-defined]
        views = _views_settled(page)
        for name, pixels in views.items():
            gray = pixels.mean(axis=2)
            assert gray.std() > 15 and (gray > 40).mean() > 0.15, f"{name} view is blank"
            # the views are centred on the tumour: its middle is in colour (the PET's table)...
            assert (_chroma(_centre(pixels)) > 60).mean() > 0.3, f"{name}: the tumour is not coloured"
            # ...and the anatomy around it stays gray
            anatomy = (_chroma(pixels) < 12) & (gray > 50)
            assert anatomy.mean() > 0.05, f"{name}: no gray anatomy"
        shot = os.environ.get("MEDFUSION_WEB_SCREENSHOT")
        if shot:
            page.screenshot(path=shot)  # type: ignore[attr-defined]
        assert _digests(demo_data) == before

    def test_the_opacity_slider_changes_the_views(self, page: object) -> None:
        before = _views_settled(page)["axial"]
        page.get_by_test_id("opacity-slider").fill("80")  # type: ignore[attr-defined]
        deadline = time.monotonic() + 15
        while True:
            after = _pixels(page, "view-axial")
            if np.abs(after - before).mean() > 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert np.abs(after - before).mean() > 3
        page.get_by_test_id("opacity-slider").fill("0")  # type: ignore[attr-defined]

    def test_the_wheel_scrolls_and_a_left_drag_changes_window_level(self, page: object) -> None:
        box = page.get_by_test_id("view-axial").bounding_box()  # type: ignore[attr-defined]
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)  # type: ignore[attr-defined]
        for act in (
            lambda: page.mouse.wheel(0, 240),  # type: ignore[attr-defined]
            lambda: (page.mouse.down(), page.mouse.move(x + 40, y + 40), page.mouse.up()),  # type: ignore[attr-defined]
        ):
            before = _views_settled(page)["axial"]
            act()
            after = _views_settled(page)["axial"]
            assert np.abs(after - before).mean() > 2

    def test_shift_and_move_over_one_view_moves_the_others_linked_cursor(self, page: object) -> None:
        before = _views_settled(page)
        box = page.get_by_test_id("view-axial").bounding_box()  # type: ignore[attr-defined]
        x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.35
        page.keyboard.down("Shift")  # type: ignore[attr-defined]
        page.mouse.move(x, y)  # type: ignore[attr-defined]
        page.mouse.move(x + 10, y + 10)  # type: ignore[attr-defined]
        page.keyboard.up("Shift")  # type: ignore[attr-defined]
        after = _views_settled(page)
        for name in ("sagittal", "coronal"):  # they jump to the point under the cursor
            assert np.abs(after[name] - before[name]).mean() > 5, name

    def test_a_2d_image_against_a_volume_is_an_error_and_the_app_goes_on(self, page: object) -> None:
        _choose(page, SLICE_2D, "sts019_PET.nii.gz")
        status = _apply(page)
        assert status.startswith("error: ") and "2-D" in status and SLICE_2D in status
        _choose(page, "sts019_MR_T1.nii.gz", "sts019_PET.nii.gz")
        assert _apply(page) == "done"

    def test_method_parameters_are_checked_and_used(self, page: object) -> None:
        _choose(page, "sts019_CT.nii.gz", "sts019_PET.nii.gz", method_select="gff")
        page.get_by_text("r1=45").wait_for()  # type: ignore[attr-defined]  # the hint lists gff's options
        page.get_by_test_id("parameters-input").fill("r9=1")  # type: ignore[attr-defined]
        status = _apply(page)
        assert status.startswith("error: gff: unknown parameter 'r9'")
        page.get_by_test_id("parameters-input").fill("r1=20")  # type: ignore[attr-defined]
        assert _apply(page) == "done"
        assert "gff" in page.get_by_test_id("message").text_content()  # type: ignore[attr-defined]
        page.get_by_test_id("parameters-input").fill("")  # type: ignore[attr-defined]
        page.get_by_test_id("method-select").select_option("recommended")  # type: ignore[attr-defined]

    def test_a_key_from_outside_the_catalogue_is_refused(self, page: object) -> None:
        page.evaluate("() => window.trame.state.set('fixed_key', '../../../../etc/passwd')")  # type: ignore[attr-defined]
        status = _apply(page)
        assert status.startswith("error: unknown volume '../../../../etc/passwd'")

    def test_cancel_stops_a_long_registration(self, page: object) -> None:
        _choose(page, "spm_T1.nii.gz", "sts019_PET.nii.gz", registration_select="bspline")
        runs = int(page.get_by_test_id("status").get_attribute("data-run"))  # type: ignore[attr-defined]
        page.get_by_test_id("apply").click()  # type: ignore[attr-defined]
        page.wait_for_function(  # type: ignore[attr-defined]
            "() => !document.querySelector('[data-testid=cancel]').disabled"
        )
        page.get_by_test_id("cancel").click()  # type: ignore[attr-defined]
        assert _finish(page, runs + 1) == "cancelled"
        page.get_by_test_id("registration-select").select_option("none")  # type: ignore[attr-defined]

    def test_save_writes_the_result_into_the_results_folder(self, page: object, demo_data: Path) -> None:
        _choose(page, "sts019_CT.nii.gz", "sts019_PET.nii.gz")
        assert _apply(page) == "done"
        before = _digests(demo_data)
        page.get_by_test_id("save").click()  # type: ignore[attr-defined]
        page.get_by_test_id("saved").filter(has_text="saved").wait_for()  # type: ignore[attr-defined]
        saved = sorted((demo_data / "medfusion-results").glob("*.nrrd"))
        assert [p.name for p in saved] == ["sts019_CT_sts019_PET_uptake_average.nrrd"]
        assert _digests(demo_data) == before

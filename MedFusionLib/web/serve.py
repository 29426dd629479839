"""``medfusion serve``: start the review app on one data folder.

Checks everything before anything starts (the folder, the address, the token, trame-slicer
installed), makes the server render without a display (EGL through slicer-core's VTK when
no X display is set), installs the access checks of :mod:`MedFusionLib.web.security` on
every request and websocket, and prints the address to open (with the token when there is
one).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import InputError, ParameterError
from .security import AccessPolicy, access_middleware, is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
RESULTS_FOLDER = "medfusion-results"
HEADLESS_WINDOW = "vtkEGLRenderWindow"


def check_web_installed() -> None:
    """Raise a one-line error naming the extra when trame-slicer is missing."""
    try:
        import trame_slicer  # noqa: F401
    except ImportError as error:
        raise InputError(
            f"medfusion serve needs the web extra ({error.name or 'trame-slicer'} is missing): "
            "pip install 'medfusion[web]'"
        ) from None


def use_headless_rendering() -> None:
    """Render offscreen with EGL (Mesa's llvmpipe without a GPU) when no X display is set."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", HEADLESS_WINDOW)


def serve(
    data: str | os.PathLike[str],
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    save_dir: str | os.PathLike[str] | None = None,
    allowed_hosts: Iterable[str] = (),
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    device: str = "auto",
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve the review app on ``host:port`` until interrupted.

    Args:
        data: the folder whose images (files and DICOM series) the page may open.
        host: the address to bind; anything but loopback needs a token.
        port: the port (``0``: a free one, printed).
        token: the token requests must carry; generated when binding beyond loopback.
        save_dir: where Save writes; default ``DATA/medfusion-results``.
        allowed_hosts: other names the server may be reached by (its DNS name).
        tls_cert, tls_key: PEM certificate and key files: serve HTTPS (both or neither).
        device: the engine's device.
        announce: prints the address (and the token when generated); by default a line on
            standard output, through a copy of its descriptor (the engine's readers redirect
            descriptors 1 and 2 for a moment to catch ITK's messages, from worker threads too).

    Raises:
        InputError: no data folder, trame-slicer missing.
        ParameterError: a bad port or token.
    """
    folder = Path(data)
    if not folder.is_dir():
        raise InputError(f"data folder {folder} does not exist or is not a folder")
    if not 0 <= int(port) <= 65535:
        raise ParameterError(f"--port must be in [0, 65535], got {port}")
    tls = _tls_files(tls_cert, tls_key)
    policy, generated = AccessPolicy.for_binding(
        host, int(port), token=token, allowed_hosts=allowed_hosts, tls=tls is not None
    )
    check_web_installed()
    use_headless_rendering()
    announce = announce or _stdout_printer()

    from trame.app import get_server

    from .app import ReviewApp

    server = get_server("medfusion-review", client_type="vue3")
    bound = {"policy": policy}

    def current() -> AccessPolicy:
        return bound["policy"]

    def on_bind(web_server: Any) -> None:
        web_server.app.middlewares.append(access_middleware(current))

    def on_ready(**_: Any) -> None:
        bound["policy"] = policy.with_port(int(server.port))
        shown = "127.0.0.1" if is_loopback(host) else host
        if host in ("0.0.0.0", "::"):  # every address: name the machine
            import socket

            shown = socket.getfqdn()
        announce(f"MedFusion review: open {bound['policy'].url(shown_host=shown)}")
        if generated:
            announce("(a token was generated for this run; give --token to choose one)")
        announce(f"data folder: {folder.resolve()}; results are saved in {review_app.review.save_dir}")

    server.controller.on_server_bind.add(on_bind)
    server.controller.on_server_ready.add(on_ready)
    review_app = ReviewApp(
        server,
        data=folder,
        save_dir=Path(save_dir) if save_dir is not None else folder / RESULTS_FOLDER,
        device=device,
    )
    argv = sys.argv
    sys.argv = argv[:1]  # trame parses the command line too: give it none of ours
    if tls is not None:
        sys.argv += ["--ssl", ",".join(tls)]  # wslink's own HTTPS option
    try:
        server.start(
            port=int(port),
            host=host,
            open_browser=False,
            show_connection_info=False,
            timeout=0,
            disable_logging=True,
        )
    finally:
        sys.argv = argv
        review_app.review.close()


def _tls_files(
    cert: str | os.PathLike[str] | None, key: str | os.PathLike[str] | None
) -> tuple[str, str] | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ParameterError("--tls-cert and --tls-key go together")
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise InputError(f"{option} file {path} does not exist")
        if "," in str(path):
            raise ParameterError(f"{option} file {path}: the name must not contain a comma")
    return str(Path(cert).resolve()), str(Path(key).resolve())


def _stdout_printer() -> Callable[[str], None]:
    stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")

    def write(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    return write

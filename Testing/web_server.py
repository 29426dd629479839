"""``medfusion serve`` in its own process, for the browser tests and the web benchmark."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A loopback port nothing listens on now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """``medfusion serve`` in its own process; :attr:`url` is the address it printed."""

    def __init__(self, data: Path, *extra: str, host: str = "127.0.0.1") -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "MedFusionLib.cli", "serve", "--data", str(data), "--host", host]
        command += ["--port", str(self.port), "--device", "cpu", *extra]
        env = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.lines: list[str] = []
        self.url: str | None = None
        ready = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line.rstrip())
                found = re.search(r"open (https?://\S+)", line)
                if found:
                    self.url = found.group(1)
                if "data folder:" in line:  # the last line of the announcement
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(90) or self.url is None:
            self.stop()
            raise RuntimeError("medfusion serve did not start:\n" + "\n".join(self.lines[-20:]))

    def get(self, path: str, *, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read(), dict(answer.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def websocket_status(self, *, origin: str | None, cookie: str | None = None) -> int:
        """The status of a websocket handshake on /ws (101 when accepted)."""
        import aiohttp

        async def handshake() -> int:
            headers = {"Origin": origin} if origin else {}
            if cookie:
                headers["Cookie"] = cookie
            async with aiohttp.ClientSession() as session:
                try:
                    async with session.ws_connect(f"http://127.0.0.1:{self.port}/ws", headers=headers) as ws:
                        await ws.close()
                        return 101
                except aiohttp.WSServerHandshakeError as error:
                    return error.status

        return asyncio.run(handshake())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

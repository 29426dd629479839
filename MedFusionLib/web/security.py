"""Who may talk to ``medfusion serve``: loopback by default, a token everywhere else.

The policy, applied to every HTTP request and to the websocket handshake before any handler
runs (an aiohttp middleware, :func:`access_middleware`):

- **Token.** Binding to an address other than loopback needs a token (generated with
  :func:`secrets.token_urlsafe` and printed once when none is given). A request carries it as
  ``?token=...`` in the URL that was printed; the answer sets it as an HttpOnly, SameSite=Strict
  cookie so that the page's scripts, images and its websocket carry it too. A request without
  the right token gets 401 and nothing else. Tokens are compared in constant time.
- **Host.** Requests must name this server in their ``Host`` header (the bound address,
  ``localhost`` for loopback, or a name given with ``--allow-host``): a web page on another
  site cannot reach a loopback server through DNS rebinding.
- **Origin.** The websocket handshake must come from a page of this server (its ``Origin``
  names the same host and port): another site's page open in the same browser cannot drive the
  app (cross-site websocket hijacking) even while the cookie is set.

What the browser may open is a separate boundary: :mod:`MedFusionLib.web.catalogue` (keys
only, never paths; nothing outside the data folder, symlinks resolved).
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import ParameterError

TOKEN_PARAMETER = "token"
TOKEN_COOKIE = "medfusion_token"
LOOPBACK_NAMES = ("localhost",)
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only listens on this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh random token (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class AccessPolicy:
    """The checks :func:`access_middleware` applies.

    Attributes:
        host: the address the server binds.
        port: its port (``0`` until known; then the bound one).
        token: the token every request must carry, or ``None`` (loopback only).
        allowed_hosts: extra host names requests may use (a DNS name of the server).
        tls: whether the server speaks HTTPS (the cookie is then ``Secure``).
    """

    host: str
    port: int
    token: str | None
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    tls: bool = False

    @classmethod
    def for_binding(
        cls, host: str, port: int, *, token: str | None, allowed_hosts: Iterable[str] = (), tls: bool = False
    ) -> tuple[AccessPolicy, bool]:
        """The policy for serving on ``host:port``; the flag says whether the token was generated.

        Raises:
            ParameterError: an empty or short token (at least 16 characters).
        """
        generated = False
        if token is not None and len(token) < MIN_TOKEN_LENGTH:
            raise ParameterError(f"--token must have at least {MIN_TOKEN_LENGTH} characters")
        if token is None and not is_loopback(host):
            token, generated = new_token(), True
        return cls(host, port, token, tuple(allowed_hosts), tls), generated

    def with_port(self, port: int) -> AccessPolicy:
        return dataclasses.replace(self, port=port)

    # --- the checks -------------------------------------------------------------------------
    def host_names(self) -> set[str]:
        names = {self.host.lower().strip("[]"), *(name.lower() for name in self.allowed_hosts)}
        if is_loopback(self.host):
            names |= {"localhost", "127.0.0.1", "::1"}
        if self.host in ("0.0.0.0", "::"):  # any address: the allowed names are the only check
            names -= {"0.0.0.0", "::"}
        return names

    def host_allowed(self, header: str | None) -> bool:
        """Whether a ``Host`` header names this server (any port is refused but its own)."""
        if not header:
            return False
        parsed = urlsplit(f"//{header}")
        try:
            port = parsed.port
        except ValueError:
            return False
        if port is not None and self.port and port != self.port:
            return False
        if self.host in ("0.0.0.0", "::") and not self.allowed_hosts:
            return True  # bound to every address with a token: the token is the check
        return (parsed.hostname or "").lower() in self.host_names()

    def origin_allowed(self, origin: str | None, host_header: str | None) -> bool:
        """Whether a websocket's ``Origin`` is a page of this server (same host and port)."""
        if not origin or not host_header:
            return False
        parsed = urlsplit(origin)
        return parsed.scheme in ("http", "https") and parsed.netloc.lower() == host_header.lower()

    def token_matches(self, value: str | None) -> bool:
        if self.token is None:
            return True
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    def url(self, *, shown_host: str | None = None) -> str:
        """The address to open (with the token when there is one)."""
        host = shown_host or self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        query = f"?{TOKEN_PARAMETER}={self.token}" if self.token else ""
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/{query}"


Handler = Callable[[Any], Awaitable[Any]]


def access_middleware(policy: Callable[[], AccessPolicy]) -> Any:
    """An aiohttp middleware applying ``policy()`` (a callable: the port is known only once bound).

    Refusals are plain-text 400 (wrong host), 403 (websocket from another origin) or 401
    (missing or wrong token), before any handler runs.
    """
    from aiohttp import web

    @web.middleware
    async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        current = policy()
        host = request.headers.get("Host")
        if not current.host_allowed(host):
            return web.Response(status=400, text="unknown host\n")
        websocket = request.headers.get("Upgrade", "").lower() == "websocket"
        if websocket and not current.origin_allowed(request.headers.get("Origin"), host):
            return web.Response(status=403, text="websocket from another origin\n")
        from_query = request.query.get(TOKEN_PARAMETER)
        offered = from_query if from_query is not None else request.cookies.get(TOKEN_COOKIE)
        if not current.token_matches(offered):
            return web.Response(status=401, text="token required: open the address medfusion serve printed\n")
        response = await handler(request)
        if current.token is not None and from_query is not None and not websocket:
            response.set_cookie(
                TOKEN_COOKIE, current.token, httponly=True, samesite="Strict", path="/", secure=current.tls
            )
        return response

    return check_access

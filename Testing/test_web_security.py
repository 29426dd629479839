"""The access policy of ``medfusion serve`` (MedFusionLib.web.security), unit by unit.

The same checks are attacked over HTTP on a real server in ``test_web.py``; here each rule's
edge cases are checked directly (no server, no trame needed).
"""

from __future__ import annotations

import pytest

from MedFusionLib.errors import ParameterError
from MedFusionLib.web.security import AccessPolicy, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("review.hospital.example", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


class TestBinding:
    def test_loopback_needs_no_token_and_anything_else_gets_one(self) -> None:
        local, generated = AccessPolicy.for_binding("127.0.0.1", 8080, token=None)
        assert local.token is None and not generated
        remote, generated = AccessPolicy.for_binding("0.0.0.0", 8080, token=None)
        assert generated and remote.token is not None and len(remote.token) >= 32
        other, _ = AccessPolicy.for_binding("0.0.0.0", 8080, token=None)
        assert other.token != remote.token

    def test_a_given_token_is_kept_and_a_short_one_refused(self) -> None:
        policy, generated = AccessPolicy.for_binding("0.0.0.0", 8080, token="x" * 16)
        assert policy.token == "x" * 16 and not generated
        with pytest.raises(ParameterError, match="at least 16"):
            AccessPolicy.for_binding("127.0.0.1", 8080, token="x" * 15)

    def test_the_printed_address(self) -> None:
        policy, _ = AccessPolicy.for_binding("0.0.0.0", 0, token="t" * 20, tls=True)
        assert policy.with_port(8443).url(shown_host="review.example") == (
            "https://review.example:8443/?token=" + "t" * 20
        )
        assert AccessPolicy("::1", 8080, None).url() == "http://[::1]:8080/"


class TestHostHeader:
    loopback = AccessPolicy("127.0.0.1", 8080, None)

    @pytest.mark.parametrize("header", ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LOCALHOST:8080"])
    def test_loopback_names_on_the_own_port(self, header: str) -> None:
        assert self.loopback.host_allowed(header)

    @pytest.mark.parametrize(
        "header", [None, "", "attacker.example", "attacker.example:8080", "127.0.0.1:9999", "127.0.0.1:x"]
    )
    def test_other_names_and_ports_are_refused(self, header: str | None) -> None:
        assert not self.loopback.host_allowed(header)

    def test_named_servers_accept_their_names_only(self) -> None:
        policy = AccessPolicy("10.0.0.5", 8443, "t" * 20, ("review.hospital.example",))
        assert policy.host_allowed("review.hospital.example:8443")
        assert policy.host_allowed("10.0.0.5:8443")
        assert not policy.host_allowed("attacker.example:8443")

    def test_every_address_with_a_token_leaves_the_check_to_the_token(self) -> None:
        policy = AccessPolicy("0.0.0.0", 8443, "t" * 20)
        assert policy.host_allowed("whatever.example:8443")
        assert not policy.host_allowed("whatever.example:1")  # still its own port only


class TestOriginAndToken:
    def test_the_websocket_origin_must_be_the_page_itself(self) -> None:
        policy = AccessPolicy("127.0.0.1", 8080, None)
        assert policy.origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080")
        assert policy.origin_allowed("https://127.0.0.1:8080", "127.0.0.1:8080")
        for origin in (None, "", "null", "http://attacker.example", "http://127.0.0.1:8081", "file://x"):
            assert not policy.origin_allowed(origin, "127.0.0.1:8080"), origin

    def test_tokens_must_match_exactly(self) -> None:
        policy = AccessPolicy("0.0.0.0", 8080, "s" * 20)
        assert policy.token_matches("s" * 20)
        for offered in (None, "", "s" * 19, "s" * 21, "S" * 20):
            assert not policy.token_matches(offered), offered
        assert AccessPolicy("127.0.0.1", 8080, None).token_matches(None)

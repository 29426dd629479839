"""Sending to a PACS and asking it what it holds: C-ECHO, C-STORE and C-FIND (pynetdicom).

MedFusion acts as a service class user (SCU, PS3.4): :func:`send` stores every DICOM file of
some folders or files on a peer with the Storage Service Class (PS3.4 annex B, C-STORE), one
association for all of them, one presentation context per SOP class and transfer syntax found;
:func:`find` queries the Study Root Query/Retrieve Information Model - FIND (PS3.4 annex C,
C-FIND) at the STUDY, SERIES or IMAGE level; :func:`echo` is the Verification Service Class
(PS3.4 annex A, C-ECHO).

A peer is written ``AE@HOST:PORT`` (the called AE title, the host name or address, the TCP
port). Every failure is a :class:`NetworkError` whose message is one line: the peer unreachable
(connection refused, timeout), the association rejected (for example an AE title the peer does
not know), or instances the peer did not store, named with the status it returned.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MedFusionError

CALLING_AE_TITLE = "MEDFUSION"
"""The AE title MedFusion calls with (``--calling-ae`` changes it)."""

TIMEOUT_S = 30.0
"""Seconds to wait for a connection, an association answer or a response (DIMSE/ACSE)."""

_WARNING_STATUSES = {0xB000, 0xB006, 0xB007}  # stored with coercion or elements discarded (PS3.4 B.2.3)
_STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
_VERIFICATION = "1.2.840.10008.1.1"
_MAX_CONTEXTS = 128  # presentation contexts one association may propose (PS3.8 9.3.2.2)


class NetworkError(MedFusionError):
    """A peer that cannot be reached, refuses the association, or does not store an instance."""


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity: its AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_peer(text: str, *, option: str = "--to") -> Peer:
    """``AE@HOST:PORT`` as a :class:`Peer` (an IPv6 host in brackets: ``AE@[::1]:104``).

    Raises:
        NetworkError: a missing part, an AE title longer than 16 characters or with a
            backslash or control character (PS3.5 AE VR), a port outside 1..65535.
    """
    ae, at, rest = str(text).partition("@")
    host, colon, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not at or not colon or not ae or not host or not port:
        raise NetworkError(f"{option} must be AE@HOST:PORT, got {text!r}")
    if len(ae) > 16 or "\\" in ae or any(ord(c) < 32 for c in ae) or not ae.strip():
        raise NetworkError(f"{option}: AE title {ae!r} must be 1 to 16 characters without backslash")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise NetworkError(f"{option}: port {port!r} must be a number from 1 to 65535")
    return Peer(ae.strip(), host, int(port))


def dicom_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The DICOM Part 10 files among ``paths`` and in the folders among them (not recursive),
    sorted by name within each folder.

    Raises:
        NetworkError: a path that does not exist, or no DICOM file at all.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.is_file())
        elif path.is_file():
            candidates = [path]
        else:
            raise NetworkError(f"cannot send {path}: no such file or folder")
        found.extend(p for p in candidates if _is_part10(p))
    if not found:
        raise NetworkError("nothing to send: no DICOM file in " + ", ".join(str(p) for p in paths))
    return found


def _is_part10(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            return stream.read(132)[128:] == b"DICM"
    except OSError:
        return False


@dataclass
class SendReport:
    """What :func:`send` did: the instances stored, stored with a warning, and not stored."""

    peer: Peer
    stored: list[Path] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.stored) + len(self.warnings) + len(self.failed)

    def failure_line(self) -> str:
        """One line naming the instances not stored (the first five, then a count)."""
        named = "; ".join(f"{path.name}: {reason}" for path, reason in self.failed[:5])
        more = f"; and {len(self.failed) - 5} more" if len(self.failed) > 5 else ""
        return f"{len(self.failed)} of {self.total} instances were not stored on {self.peer}: {named}{more}"


def _application_entity(calling_ae: str, timeout: float) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


def _reachable(peer: Peer, timeout: float) -> None:
    """Refuse a peer nobody listens on with the reason the socket gives (one line)."""
    try:
        with socket.create_connection((peer.host, peer.port), timeout=timeout):
            return
    except OSError as error:
        reason = error.strerror or type(error).__name__
        if isinstance(error, TimeoutError | socket.timeout):
            reason = f"no answer within {timeout:g} s"
        raise NetworkError(f"cannot reach the PACS {peer}: {reason.lower()}") from None


def _associate(ae: Any, peer: Peer, timeout: float) -> Any:
    _reachable(peer, timeout)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        raise NetworkError(
            f"the PACS {peer} rejected the association from {ae.ae_title} (is {peer.ae_title!r} its AE title, "
            f"and does it accept {ae.ae_title!r}?)"
        )
    raise NetworkError(f"the PACS {peer} aborted the association or did not answer within {timeout:g} s")


def echo(peer: Peer, *, calling_ae: str = CALLING_AE_TITLE, timeout: float = TIMEOUT_S) -> None:
    """C-ECHO (PS3.4 annex A): succeed or raise :class:`NetworkError`."""
    ae = _application_entity(calling_ae, timeout)
    ae.add_requested_context(_VERIFICATION)
    assoc = _associate(ae, peer, timeout)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status or status.Status != 0x0000:
        raise NetworkError(f"the PACS {peer} did not answer C-ECHO")


def send(
    paths: Sequence[str | os.PathLike[str]],
    peer: Peer,
    *,
    calling_ae: str = CALLING_AE_TITLE,
    timeout: float = TIMEOUT_S,
    check: bool = True,
) -> SendReport:
    """C-STORE every DICOM file of ``paths`` (files or folders) on ``peer`` (PS3.4 annex B).

    The files are read (never changed) and sent as they are stored, one presentation context
    per SOP class and transfer syntax. An instance whose store fails (a failure status, or the
    association dropped before it) is listed in :attr:`SendReport.failed`, the others are sent
    all the same.

    Args:
        check: raise :class:`NetworkError` naming the instances not stored (default); else
            return the report.

    Raises:
        NetworkError: no DICOM file; the peer unreachable or refusing the association; with
            ``check``, any instance not stored.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = dicom_files(paths)
    datasets: list[tuple[Path, Any]] = []
    contexts: dict[str, set[str]] = {}
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError) as error:
            raise NetworkError(f"cannot send {path}: {error}") from None
        syntax = str(ds.file_meta.TransferSyntaxUID)
        contexts.setdefault(str(ds.SOPClassUID), set()).add(syntax)
        datasets.append((path, ds))
    if sum(len(s) for s in contexts.values()) > _MAX_CONTEXTS:
        raise NetworkError(
            f"cannot send {len(files)} files in one association: more than {_MAX_CONTEXTS} kinds"
        )
    ae = _application_entity(calling_ae, timeout)
    for sop_class, syntaxes in sorted(contexts.items()):
        for syntax in sorted(syntaxes):
            ae.add_requested_context(sop_class, [syntax])
    report = SendReport(peer)
    assoc = _associate(ae, peer, timeout)
    accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
    try:
        for path, ds in datasets:
            if not assoc.is_established:
                report.failed.append((path, "the association ended before it was sent"))
                continue
            kind = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
            if kind not in accepted:
                report.failed.append((path, f"the PACS does not accept SOP class {kind[0]} in {kind[1]}"))
                continue
            try:
                status = assoc.send_c_store(ds)
            except (RuntimeError, ValueError) as error:  # e.g. no accepted presentation context
                report.failed.append((path, " ".join(str(error).split())[:120]))
                continue
            code = int(getattr(status, "Status", -1)) if status else -1
            if code == 0x0000:
                report.stored.append(path)
            elif code in _WARNING_STATUSES:
                report.warnings.append((path, f"status 0x{code:04X}"))
            elif code == -1:
                report.failed.append((path, "no response (connection lost or timed out)"))
            else:
                comment = str(getattr(status, "ErrorComment", "") or "").strip()
                report.failed.append((path, f"status 0x{code:04X}" + (f" {comment}" if comment else "")))
    finally:
        if assoc.is_established:
            assoc.release()
    if check and report.failed:
        raise NetworkError(report.failure_line())
    return report


def find(
    peer: Peer,
    *,
    level: str = "SERIES",
    query: dict[str, str] | None = None,
    returned: Sequence[str] = (),
    calling_ae: str = CALLING_AE_TITLE,
    timeout: float = TIMEOUT_S,
) -> list[dict[str, str]]:
    """C-FIND with the Study Root information model (PS3.4 C.6.2) at ``level``.

    Args:
        level: ``"STUDY"``, ``"SERIES"`` or ``"IMAGE"``.
        query: keyword -> value to match (for example ``{"StudyInstanceUID": uid}``).
        returned: further keywords to return (asked for with an empty value).

    Returns:
        One dict per match: keyword -> value (as strings).

    Raises:
        NetworkError: the peer unreachable, refusing the association, or answering with a failure.
    """
    from pydicom.dataset import Dataset

    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword in returned:
        setattr(identifier, keyword, "")
    for keyword, value in (query or {}).items():
        setattr(identifier, keyword, value)
    ae = _application_entity(calling_ae, timeout)
    ae.add_requested_context(_STUDY_ROOT_FIND)
    assoc = _associate(ae, peer, timeout)
    matches: list[dict[str, str]] = []
    try:
        for status, answer in assoc.send_c_find(identifier, _STUDY_ROOT_FIND):
            code = int(getattr(status, "Status", -1)) if status else -1
            if code in (0xFF00, 0xFF01) and answer is not None:
                matches.append({element.keyword: str(element.value) for element in answer if element.keyword})
            elif code not in (0x0000, 0xFF00, 0xFF01):
                raise NetworkError(f"the PACS {peer} answered C-FIND with status 0x{code & 0xFFFF:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return matches

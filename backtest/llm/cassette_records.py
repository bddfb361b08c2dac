"""One cassette line: the :class:`Recording` it holds and its on-disk encoding.

A line is ``<key>\\t<crc32 of the payload, 8 hex>\\t<payload: canonical JSON>\\n``
(:func:`_encode_line`). Also here: :class:`CassetteStats` (what ``backtest cassette stats``
prints) and whether another process still writes a shard (:func:`_writer_alive`, by its
``flock``), which decides what a merge may compact.
"""

from __future__ import annotations

try:  # POSIX: shard locks
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

import json
import os
import re
import socket
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["CassetteStats", "Recording"]


@dataclass(frozen=True, slots=True)
class Recording:
    """One recorded call: the canonical request and what came back.

    Attributes:
        key: The request key.
        request: The canonical request.
        outcome: ``"ok"`` (``response`` holds the response body) or ``"error"``
            (``error`` holds ``type``, ``status``, ``message`` and ``retry_after``).
        response: The raw response body as the provider sent it (JSON object).
        error: What went wrong, when it did.
        latency_ms: Wall time of the live call.
        meta: Anything else the client stored (profile name, SDK version, cost).
    """

    key: str
    request: dict[str, Any]
    outcome: Literal["ok", "error"]
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    latency_ms: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON object stored on the recording's line."""
        return {
            "request": self.request,
            "outcome": self.outcome,
            "response": self.response,
            "error": self.error,
            "latency_ms": self.latency_ms,
            "meta": self.meta,
        }

    @classmethod
    def from_payload(cls, key: str, data: Mapping[str, Any]) -> Recording:
        """Rebuild a recording from its stored JSON object."""
        return cls(
            key=key,
            request=dict(data.get("request") or {}),
            outcome=data.get("outcome", "ok"),
            response=data.get("response"),
            error=data.get("error"),
            latency_ms=float(data.get("latency_ms") or 0.0),
            meta=dict(data.get("meta") or {}),
        )


@dataclass(frozen=True, slots=True)
class CassetteStats:
    """What :meth:`Cassette.stats` reports."""

    recordings: int
    shards: int
    errors: int
    models_requested: dict[str, int]
    models_served: dict[str, set[str]]
    duplicate_keys: int
    torn_lines: int

    @property
    def mixed_snapshots(self) -> dict[str, set[str]]:
        """Requested models that were served by more than one model id (snapshot drift)."""
        return {m: s for m, s in self.models_served.items() if len(s) > 1}


def _writer_alive(shard: Path) -> bool:
    """Whether a writer still has ``shard`` open for appending.

    A writer holds an exclusive ``flock`` on its shard from creation to :meth:`Cassette.close`
    (or its process's end), so a long-lived process that finished writing (a Ray worker
    between tasks) does not keep its shard out of a merge. Where ``flock`` is missing, the
    process named in the shard (host and pid) being alive counts instead.
    """
    parts = shard.stem.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[0].startswith("shard-"):
        return False  # shard-merged.tsv, or a name this module did not write
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:32]
    pid = int(parts[1])
    if parts[0][len("shard-") :] != host or pid == os.getpid():
        return False
    if fcntl is not None:
        try:
            fd = os.open(shard, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases a lock we took
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _outcome(line: bytes) -> str:
    """The outcome of a stored line (parsed: only duplicate keys need it)."""
    try:
        return str(json.loads(line[74:]).get("outcome", "ok"))
    except ValueError:
        return "error"  # a damaged duplicate never displaces a readable recording


def _encode_line(key: str, payload: Mapping[str, Any]) -> bytes:
    body = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()
    return b"%s\t%08x\t%s\n" % (key.encode(), zlib.crc32(body), body)

"""What a run's LLM answers come from: the cassette's fingerprint, and the source resolved.

:func:`cassette_fingerprint` is the sha256 of the cassette's recordings as a set: every
complete line (``key``, checksum, payload) of every ``shard-*.tsv``, each reduced to its own
sha256 digest, deduplicated and sorted.
It does not depend on how the recordings are spread over shards, so compacting a cassette
(:meth:`~backtest.llm.cassette.Cassette.merge`) keeps it, while a recording added, removed
or changed gives a new one. A torn last line (a writer killed mid-line, ignored on replay)
is ignored here too. Per shard the set of lines is cached by (size, mtime), so a sweep that
asks for the same cassette for every point reads each shard once.

:func:`llm_source` resolves ``mode = "auto"`` the way the LLM policy does when it starts:
``live`` for a local profile or when the profile's API-key variable is set (its name enters
the run id, never its value), else ``replay`` when the cassette holds recordings, else ``offline``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["cassette_fingerprint", "llm_source"]

_LINES: dict[Path, tuple[tuple[int, int], frozenset[bytes]]] = {}


def _shard_lines(path: Path) -> frozenset[bytes]:
    """The sha256 digests of a shard's complete lines (streamed: a cassette of 10,000
    recordings is ~30 MB, and a replay must not hold it in memory to name itself)."""
    stat = path.stat()
    stamp = (stat.st_size, stat.st_mtime_ns)
    cached = _LINES.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    digests = set()
    with open(path, "rb") as handle:
        for line in handle:
            if line.endswith(b"\n") and len(line) > 1:  # a torn last line is ignored
                digests.add(hashlib.sha256(line).digest())
    lines = frozenset(digests)
    _LINES[path] = (stamp, lines)
    return lines


def cassette_fingerprint(path: str | Path) -> str:
    """sha256 of the cassette's set of recordings (``empty`` when it holds none): of the
    sorted, deduplicated sha256 digests of its complete lines."""
    folder = Path(path)
    shards = sorted(folder.glob("shard-*.tsv")) if folder.is_dir() else []
    lines: set[bytes] = set()
    for shard in shards:
        lines |= _shard_lines(shard.resolve())
    if not lines:
        return "empty"
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line)
    return digest.hexdigest()


def llm_source(mode: str, key_env: str | None, cassette: str | Path, *, local: bool = False) -> str:
    """``live``, ``replay`` or ``offline``: what answers a policy started now.

    A local profile (a model served on this machine) is always ``live``.
    """
    if mode != "auto":
        return mode
    if local or (key_env and os.environ.get(key_env)):
        return "live"
    folder = Path(cassette)
    if folder.is_dir() and any(folder.glob("shard-*.tsv")):
        return "replay"
    return "offline"

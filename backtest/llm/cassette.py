"""The cassette: every LLM answer (and every error) recorded, so a run replays exactly and offline.

A cassette is a directory of append-only shard files, one per writing process
(``shard-<host>-<pid>-<random>.tsv``), so several processes can record into one cassette at
once without touching each other's bytes. Each line is one recording::

    <key>\\t<crc32 of the payload, 8 hex>\\t<payload: canonical JSON>\\n

The key is the sha256 of the canonical request (:func:`request_key`): model, messages
(an image replaced by the hash of what it was drawn from and the renderer's version),
sampling parameters, response format, seed, tools, stop, provider preferences, the sample
index, the prompt template's version and the attempt number. Never the API key, headers or
base URL. Every string written
is scrubbed of the values of the API-key environment variables and of key-shaped text.

A line is flushed (and fsynced) before the call that produced it returns, so a writer
killed with SIGKILL loses at most the call in flight; its torn last line (no newline) is
ignored on open and reported by :meth:`Cassette.verify`. Any other damaged line (bad
checksum, bad JSON) raises :class:`~backtest.errors.CassetteError` naming the file and line.

Opening streams every shard once and indexes keys by where their line lies (shard, offset,
length), without parsing payloads or keeping them: a lookup reads its line back with
``pread`` and parses it, and only the last :data:`PARSED_CACHE` parsed recordings are kept.
Memory therefore grows by about 200 bytes per recording however large the prompts are, and
a cassette of 100,000 recordings opens in well under a second. When two
lines hold the same key (two processes recorded the same call, or a failed call was called
again), a recorded answer wins over a recorded failure, and otherwise the first in sorted
shard order wins, deterministically; :meth:`Cassette.merge` compacts shards into one and
reports such conflicts.

Record modes follow vcrpy: ``none`` (replay only; a miss is an error), ``once`` (record into
an empty cassette, else replay only), ``new_episodes`` (replay hits, record misses), ``all``
(record every call, never replay).

Failures (refused connections, timeouts, 429, 5xx, malformed bodies) are recorded, so that
``none`` (and ``once`` on a cassette that has recordings) replays a run's retries and
fallbacks exactly. In the modes that record, a failure recorded by an earlier process is not
a hit: the call is made again and its new outcome recorded beside it (an answer then wins
the lookup), so one bad night never poisons a cassette. A failure this process recorded is
still a hit for it, so the strategies of one run that ask the same call take the same
retries and fallbacks, and a strict replay of the run reproduces them.
:meth:`Cassette.prune_failures` (``backtest cassette prune --failures``) rewrites a cassette
without them.
"""

from __future__ import annotations

try:  # POSIX: shard locks
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

import json
import os
import re
import secrets
import socket
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from backtest.errors import CassetteError, ConfigError
from backtest.llm.cassette_keys import (  # noqa: F401 (re-exported: the old home of these names)
    _KEY_FIELDS,
    _KEY_SHAPES,
    _REDACTED,
    SECRET_ENV_VARS,
    _canonical_content,
    _secret_values,
    canonical_request,
    request_key,
    scrub,
)
from backtest.llm.cassette_records import (
    CassetteStats,
    Recording,
    _encode_line,
    _outcome,
    _writer_alive,
)

__all__ = [
    "PARSED_CACHE",
    "RECORD_MODES",
    "SECRET_ENV_VARS",
    "SESSION",
    "Cassette",
    "CassetteStats",
    "Recording",
    "canonical_request",
    "request_key",
    "scrub",
]


RecordMode = Literal["none", "once", "new_episodes", "all"]
RECORD_MODES: tuple[str, ...] = ("none", "once", "new_episodes", "all")


#: Parsed recordings kept for repeated lookups (the rest are read back from disk).
PARSED_CACHE = 1024
_READ_BLOCK = 1 << 20
_SHARD_GLOB = "shard-*.tsv"
#: Marks the failures this process records (``meta.session``): those stay hits for it.
SESSION = secrets.token_hex(8)


class Cassette:
    """A directory of recordings, opened in one record mode.

    Args:
        path: The cassette directory (created when recording).
        record_mode: ``none``, ``once``, ``new_episodes`` or ``all``.
        fsync: fsync each recording before returning (what survives a power cut, not just
            a killed process).
        secret_env: Names of further environment variables whose values must never be
            written (e.g. the config's ``api_key_env``).

    Raises:
        ConfigError: Unknown record mode.
        CassetteError: A damaged shard.
    """

    def __init__(
        self,
        path: str | Path,
        record_mode: RecordMode = "none",
        *,
        fsync: bool = True,
        secret_env: Iterable[str] = (),
    ) -> None:
        if record_mode not in RECORD_MODES:
            raise ConfigError(
                f"llm.record_mode: {record_mode!r} is not a record mode. Fix: use one of "
                f"{', '.join(RECORD_MODES)}."
            )
        self.path = Path(path)
        self.fsync = fsync
        self._secrets = _secret_values(secret_env)
        # key -> (offset << 40 | length << 16 | file number): one int per recording.
        self._index: dict[str, int] = {}
        self._files: list[Path] = []
        self._fds: dict[int, int] = {}
        self._parsed: OrderedDict[str, Recording] = OrderedDict()
        self._duplicates = 0
        self._torn: list[tuple[str, int]] = []
        self._shards: list[Path] = []
        self._writer: Any = None
        self._writer_path: Path | None = None
        self._load()
        was_empty = not self._index
        self.record_mode: RecordMode = record_mode
        # vcrpy's "once": record only into a cassette that had nothing in it.
        self._can_record = record_mode in ("new_episodes", "all") or (
            record_mode == "once" and was_empty
        )
        self._can_replay = record_mode != "all"

    # ------------------------------------------------------------------ reading

    def _load(self) -> None:
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise CassetteError(
                f"{self.path}: a cassette is a directory of shard files, not a file. Fix: "
                "point llm.cassette at a directory."
            )
        self._shards = sorted(self.path.glob(_SHARD_GLOB))
        for shard in self._shards:
            self._index_shard(shard)

    def _index_shard(self, shard: Path) -> None:
        number = len(self._files)
        self._files.append(shard)
        index = self._index
        offset = 0
        line_no = 0
        with open(shard, "rb", buffering=_READ_BLOCK) as fh:
            for line in fh:
                line_no += 1
                length = len(line)
                if not line.endswith(b"\n"):
                    # A writer died mid-line: that record never completed (the call in flight).
                    self._torn.append((str(shard), line_no))
                    break
                if length < 76 or line[64:65] != b"\t" or line[73:74] != b"\t":
                    raise CassetteError(
                        f"{shard}:{line_no}: damaged recording (not '<key>\\t<crc>\\t<json>'). "
                        "Fix: run `backtest cassette verify` and restore the shard from a copy, "
                        "or delete the line and re-record that call."
                    )
                key = line[:64].decode("ascii", "replace")
                code = (offset << 40) | ((length - 1) << 16) | number
                if key in index:
                    self._duplicates += 1
                    # An answer recorded after a failure of the same call wins the lookup.
                    if _outcome(line) == "ok" and self._parse(key).outcome == "error":
                        index[key] = code
                else:
                    index[key] = code
                offset += length

    def _read_line(self, key: str) -> tuple[bytes, Path, int]:
        code = self._index[key]
        number, length, offset = code & 0xFFFF, (code >> 16) & 0xFFFFFF, code >> 40
        fd = self._fds.get(number)
        if fd is None:
            try:
                fd = self._fds[number] = os.open(self._files[number], os.O_RDONLY)
            except FileNotFoundError as exc:
                raise CassetteError(
                    f"{self._files[number]}: this shard was removed while the cassette was "
                    "open (by `backtest cassette merge`?), so recording "
                    f"{key[:12]}... cannot be read. Fix: open the cassette again, and merge "
                    "only when no run is using it."
                ) from exc
        return os.pread(fd, length, offset), self._files[number], offset

    @staticmethod
    def _line_number(path: Path, offset: int) -> int:
        with open(path, "rb") as fh:
            return fh.read(offset).count(b"\n") + 1

    def _parse(self, key: str) -> Recording:
        line, path, offset = self._read_line(key)
        body = line[74:]
        if zlib.crc32(body) != int(line[65:73], 16):
            raise CassetteError(
                f"{path}:{self._line_number(path, offset)}: checksum mismatch for recording "
                f"{key[:12]}... (the line was altered or damaged). Fix: restore the shard or "
                "re-record."
            )
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise CassetteError(
                f"{path}:{self._line_number(path, offset)}: recording {key[:12]}... is not "
                f"valid JSON ({exc})."
            ) from exc
        return Recording.from_payload(key, payload)

    def _remember(self, recording: Recording) -> Recording:
        parsed = self._parsed
        parsed[recording.key] = recording
        parsed.move_to_end(recording.key)
        if len(parsed) > PARSED_CACHE:
            parsed.popitem(last=False)
        return recording

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def keys(self) -> Iterator[str]:
        """Every recorded key, in index order."""
        return iter(self._index)

    @property
    def can_record(self) -> bool:
        """Whether a miss may be recorded in this mode."""
        return self._can_record

    @property
    def can_replay(self) -> bool:
        """Whether hits are served from the cassette in this mode."""
        return self._can_replay

    def get(self, key: str) -> Recording | None:
        """The recording for ``key``: None on a miss, always in ``all`` mode, and in a mode
        that records, for a failure an earlier process recorded (the call is made again)."""
        if not self._can_replay or key not in self._index:
            return None
        recording = self._parsed.get(key)
        if recording is None:
            recording = self._remember(self._parse(key))
        if (
            recording.outcome == "error"
            and self._can_record
            and recording.meta.get("session") != SESSION
        ):
            return None  # an earlier run's failure: call again
        return recording

    # ------------------------------------------------------------------ writing

    def _open_writer(self) -> Any:
        self.path.mkdir(parents=True, exist_ok=True)
        host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:32]
        name = f"shard-{host}-{os.getpid()}-{secrets.token_hex(4)}.tsv"
        self._writer_path = self.path / name
        fd = os.open(self._writer_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        if fcntl is not None:  # held until close: a merge leaves an open shard alone
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._files.append(self._writer_path)
        self._writer = os.fdopen(fd, "ab", buffering=0)
        return self._writer

    def record(self, recording: Recording) -> Recording:
        """Append a recording to this process's shard, durably, and index it.

        Returns:
            The recording as written (scrubbed of secrets).

        Raises:
            CassetteError: The mode does not allow recording.
        """
        if not self._can_record:
            raise CassetteError(
                f"{self.path}: record mode {self.record_mode!r} does not record new calls."
            )
        payload = scrub(recording.payload(), self._secrets)
        if recording.outcome == "error":
            payload["meta"] = {**payload["meta"], "session": SESSION}
        line = _encode_line(recording.key, payload)
        writer = self._writer or self._open_writer()
        writer.write(line)
        if self.fsync:
            os.fsync(writer.fileno())
        end = os.lseek(writer.fileno(), 0, os.SEEK_CUR)
        stored = Recording.from_payload(recording.key, payload)
        previous = self._parsed.get(recording.key)
        if recording.key in self._index and previous is None:
            previous = self._parse(recording.key)
        # The newest recording is the one looked up, unless it is a failure of a call
        # that has an answer already.
        if previous is None or stored.outcome == "ok" or previous.outcome == "error":
            assert self._writer_path is not None
            number = self._files.index(self._writer_path)
            self._index[recording.key] = (
                ((end - len(line)) << 40) | ((len(line) - 1) << 16) | number
            )
        return self._remember(stored)

    def close(self) -> None:
        """Close this process's shard and the files opened for lookups."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> Cassette:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- maintenance

    def recordings(self) -> Iterator[Recording]:
        """Every recording, parsed and checked, in index order."""
        for key in list(self._index):
            yield self._parsed.get(key) or self._parse(key)

    def verify(self) -> list[str]:
        """Parse and checksum every line of every shard.

        Returns:
            Notes that are not errors: torn last lines of killed writers (the record in
            flight), duplicate keys.

        Raises:
            CassetteError: The first damaged recording, with its file and line.
        """
        for _ in self.recordings():
            pass
        notes = [
            f"{path}:{line}: torn last line (a writer stopped mid-record; that call was "
            "not recorded)"
            for path, line in self._torn
        ]
        if self._duplicates:
            notes.append(f"{self._duplicates} duplicate key(s): the first in shard order is used")
        return notes

    def stats(self) -> CassetteStats:
        """Counts of recordings, errors and models; flags mixed served snapshots."""
        requested: dict[str, int] = {}
        served: dict[str, set[str]] = {}
        errors = 0
        for recording in self.recordings():
            model = str(recording.request.get("model", ""))
            requested[model] = requested.get(model, 0) + 1
            if recording.outcome == "error":
                errors += 1
            elif recording.response:
                served.setdefault(model, set()).add(str(recording.response.get("model", "")))
        return CassetteStats(
            recordings=len(self._index),
            shards=len(self._shards) + (1 if self._writer_path else 0),
            errors=errors,
            models_requested=dict(sorted(requested.items())),
            models_served=served,
            duplicate_keys=self._duplicates,
            torn_lines=len(self._torn),
        )

    def export(self, out: str | Path) -> int:
        """Write every recording as JSON lines (key, request, outcome...) sorted by key.

        Returns:
            The number of recordings written.
        """
        rows = sorted(self.recordings(), key=lambda r: r.key)
        with open(out, "w", encoding="utf-8") as fh:
            for recording in rows:
                fh.write(
                    json.dumps(
                        {"key": recording.key, **recording.payload()},
                        sort_keys=True,
                        ensure_ascii=False,
                    )
                    + "\n"
                )
        return len(rows)

    def merge(self) -> tuple[Path, int]:
        """Compact the shards into one (sorted by key, duplicates dropped), atomically.

        Only the shards indexed when this cassette was opened are merged and removed, and
        among them not those of a writer still running on this host: records such a writer
        (or one that started after the open) appends later would otherwise go to a removed
        file and be lost.

        Returns:
            The merged shard and the number of duplicate keys dropped.
        """
        target, _, dropped = self._rewrite(drop_failures=False)
        return target, dropped

    def prune_failures(self) -> tuple[Path, int, int]:
        """Compact the shards like :meth:`merge`, leaving out every recorded failure.

        A replay of the pruned cassette in mode ``none`` misses the calls that had only
        failed (record them again with ``new_episodes``); calls that failed and then
        answered replay the answer, as before.

        Returns:
            The rewritten shard, the number of failure recordings removed, and the number of
            duplicate lines dropped (among them failures an answer of the same call shadowed).
        """
        return self._rewrite(drop_failures=True)

    def _rewrite(self, *, drop_failures: bool) -> tuple[Path, int, int]:
        self.close()
        own = [self._writer_path] if self._writer_path is not None else []
        sources = [p for p in [*self._shards, *own] if not _writer_alive(p)]
        numbers = {n for n, p in enumerate(self._files) if p in set(sources)}
        chosen = sorted(
            (
                self._parsed.get(key) or self._parse(key)
                for key, code in self._index.items()
                if code & 0xFFFF in numbers
            ),
            key=lambda r: r.key,
        )
        rows = [r for r in chosen if not (drop_failures and r.outcome == "error")]
        removed = len(chosen) - len(rows)
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / "shard-merged.tsv"
        tmp = self.path / ".merge.tmp"
        with open(tmp, "wb") as fh:
            for recording in rows:
                fh.write(_encode_line(recording.key, recording.payload()))
            fh.flush()
            os.fsync(fh.fileno())
        self.close()
        old = [p for p in sources if p != target]
        tmp.replace(target)
        for shard in old:
            shard.unlink()
        dropped = self._duplicates
        self.close()
        self._index.clear()
        self._files.clear()
        self._parsed.clear()
        self._duplicates = 0
        self._torn.clear()
        self._writer_path = None
        self._load()
        return target, removed, dropped

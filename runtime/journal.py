"""The journal in `RESULTS/results.db` (SQLite, WAL): what happened to every input, so each is analysed once.

Tables: `inputs` (one row per source path: content hash, state queued|seen|done|failed|alias, reason, stem),
`results` (one row per analysed content hash, what `results.csv` is made from), `events` (started/done/failed
per run, for auditing), `runs`, `specimens`. A result is committed in one transaction (results row + input
state + event) after its files are renamed into place, so a crash leaves either no trace or a complete one.
"""

from __future__ import annotations

import fcntl
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hep2edge.atomic import OutputWriteError, describe_os_error
from hep2edge.errors import ConfigError
from hep2edge.labels import PATTERNS

DB_NAME = "results.db"
RESULT_COLUMNS: tuple[str, ...] = (
    "content_hash", "stem", "source_path", "specimen", "pattern", "pattern_probability", "intensity",
    "intensity_probability", "foreground_fraction", *(f"p_{name}" for name in PATTERNS), "tiles",
    "model_id", "precision", "backend", "total_ms", "analysed_at",
)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, started REAL NOT NULL, arguments TEXT);
CREATE TABLE IF NOT EXISTS inputs (
    path TEXT PRIMARY KEY, content_hash TEXT, state TEXT NOT NULL, reason TEXT, stem TEXT,
    run INTEGER, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS inputs_hash ON inputs(content_hash);
CREATE TABLE IF NOT EXISTS results ({", ".join(c + (" TEXT PRIMARY KEY" if c == "content_hash" else "")
                                               for c in RESULT_COLUMNS)});
CREATE UNIQUE INDEX IF NOT EXISTS results_stem ON results(stem);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, run INTEGER, content_hash TEXT, path TEXT, event TEXT, detail TEXT, at REAL);
CREATE TABLE IF NOT EXISTS specimens (
    specimen TEXT PRIMARY KEY, images INTEGER, complete INTEGER, pattern TEXT, pattern_probability REAL,
    intensity TEXT, intensity_probability REAL, method TEXT, updated REAL);
"""
UNSAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Claim:
    """What to do with an input: `analyse` (under `stem`), or skip as `duplicate` / `failed`."""

    action: str
    stem: str = ""
    detail: str = ""


def safe_stem(name: str) -> str:
    return UNSAFE_STEM.sub("_", name).strip("._") or "image"


class Journal:
    """Thread-safe access to results.db; every public method is one transaction."""

    def __init__(self, results_dir: Path, arguments: dict[str, Any] | None = None) -> None:
        self.path = Path(results_dir) / DB_NAME
        self._lock = threading.RLock()  # re-entrant: `exclusive()` wraps several calls that each take it
        self._owner = self._take_ownership()
        started = time.time()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            cursor = self._db.execute(
                "INSERT INTO runs(started, arguments) VALUES (?, ?)", (started, json.dumps(arguments or {}))
            )
        except sqlite3.Error as exc:
            self._owner.close()
            raise OutputWriteError(f"{self.path}: cannot open the results database ({exc})") from exc
        self.run = int(cursor.lastrowid or 0)
        self.run_started = started

    def _take_ownership(self) -> IO[bytes]:
        """An exclusive flock on results.db (independent of SQLite's own fcntl locks): one run per RESULTS.

        The kernel drops it when the process dies, so a run killed with SIGKILL never blocks its restart.
        """
        try:
            handle = open(self.path, "ab")  # noqa: SIM115 - held open for the journal's lifetime
        except OSError as exc:
            raise OutputWriteError(f"{self.path}: cannot open ({describe_os_error(exc)})") from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise ConfigError(
                f"{self.path.parent}: another hep2edge run is using these RESULTS; stop it or pass another --out"
            ) from exc
        return handle

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """No other thread reads or writes the journal inside: a read, then a write based on it, stay consistent."""
        with self._lock:
            yield

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                raise OutputWriteError(f"{self.path}: cannot write the journal ({exc})") from exc
            except OSError as exc:
                raise OutputWriteError(f"{self.path}: cannot write the journal ({describe_os_error(exc)})") from exc

    def _event(self, db: sqlite3.Connection, content_hash: str | None, path: str, event: str, detail: str = "") -> None:
        db.execute(
            "INSERT INTO events(run, content_hash, path, event, detail, at) VALUES (?, ?, ?, ?, ?, ?)",
            (self.run, content_hash, path, event, detail, time.time()),
        )

    def note_queued(self, path: str) -> None:
        """A source saw `path`; it is re-queued after a crash until it is done or failed."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO inputs(path, state, run, updated) VALUES (?, 'queued', ?, ?)",
                (path, self.run, time.time()),
            )

    def claim(self, path: str, content_hash: str, stem_hint: str, retry_failed: bool = False) -> Claim:
        """Decide, atomically, whether this run analyses `path` (content `content_hash`)."""
        with self._transaction() as db:
            done = db.execute(
                "SELECT stem, source_path FROM results WHERE content_hash = ?", (content_hash,)
            ).fetchone()
            if done is not None:
                state = "done" if done[1] == path else "alias"
                self._set(db, path, content_hash, state, f"same content as {done[1]}" if state == "alias" else "",
                          done[0])
                return Claim("duplicate", done[0], f"already analysed as {done[0]}")
            row = db.execute("SELECT content_hash, state, stem, run FROM inputs WHERE path = ?", (path,)).fetchone()
            if row is not None and row[0] == content_hash and row[1] == "seen" and row[3] == self.run:
                return Claim("duplicate", row[2] or "", "in progress")
            if not retry_failed:
                failed = db.execute(
                    "SELECT path, reason FROM inputs WHERE content_hash = ? AND state = 'failed' LIMIT 1",
                    (content_hash,),
                ).fetchone()
                if failed is not None:
                    if failed[0] != path:
                        self._set(db, path, content_hash, "failed", f"same content as {failed[0]}: {failed[1]}", None)
                    return Claim("failed", "", "failed before (use --retry-failed)")
            twin = db.execute(
                "SELECT path, stem FROM inputs WHERE content_hash = ? AND path != ? AND state = 'seen' AND run = ?",
                (content_hash, path, self.run),
            ).fetchone()
            if twin is not None:
                self._set(db, path, content_hash, "alias", f"same content as {twin[0]}", twin[1])
                return Claim("duplicate", twin[1], f"same content as {twin[0]} (in progress)")
            stem = self._stem_for(db, content_hash, stem_hint)
            self._set(db, path, content_hash, "seen", "", stem)
            self._event(db, content_hash, path, "started")
            return Claim("analyse", stem)

    def _stem_for(self, db: sqlite3.Connection, content_hash: str, hint: str) -> str:
        """The stem a content hash was given before (crash recovery), else a free one."""
        previous = db.execute(
            "SELECT stem FROM inputs WHERE content_hash = ? AND stem IS NOT NULL LIMIT 1", (content_hash,)
        ).fetchone()
        if previous is not None:
            return str(previous[0])
        stem = safe_stem(hint)
        taken = db.execute(
            "SELECT 1 FROM inputs WHERE stem = ? AND content_hash != ? UNION "
            "SELECT 1 FROM results WHERE stem = ? AND content_hash != ?",
            (stem, content_hash, stem, content_hash),
        ).fetchone()
        return f"{stem}-{content_hash[:8]}" if taken else stem

    def _set(self, db: sqlite3.Connection, path: str, content_hash: str | None, state: str, reason: str,
             stem: str | None) -> None:
        db.execute(
            "INSERT INTO inputs(path, content_hash, state, reason, stem, run, updated) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET content_hash = excluded.content_hash, state = excluded.state, "
            "reason = excluded.reason, stem = excluded.stem, run = excluded.run, updated = excluded.updated",
            (path, content_hash, state, reason, stem, self.run, time.time()),
        )

    def complete(self, path: str, row: dict[str, Any]) -> None:
        """Record a finished result: results row, input done, event, in one transaction."""
        columns = ", ".join(RESULT_COLUMNS)
        marks = ", ".join("?" for _ in RESULT_COLUMNS)
        with self._transaction() as db:
            db.execute(f"INSERT OR REPLACE INTO results({columns}) VALUES ({marks})",
                       [row.get(c) for c in RESULT_COLUMNS])
            self._set(db, path, row["content_hash"], "done", "", row["stem"])
            self._event(db, row["content_hash"], path, "done")

    def fail(self, path: str, content_hash: str | None, reason: str) -> None:
        with self._transaction() as db:
            self._set(db, path, content_hash, "failed", reason, None)
            self._event(db, content_hash, path, "failed", reason)

    def requeue_failed(self) -> list[str]:
        """--retry-failed: failed inputs go back to `queued`; returns their paths."""
        with self._transaction() as db:
            paths = [r[0] for r in db.execute("SELECT path FROM inputs WHERE state = 'failed'")]
            db.execute("UPDATE inputs SET state = 'queued', reason = NULL WHERE state = 'failed'")
        return paths

    def unfinished(self) -> list[tuple[str, str | None, str | None]]:
        """(path, content hash, stem) of inputs queued or started by an earlier run but never finished."""
        with self._lock:
            return list(self._db.execute(
                "SELECT path, content_hash, stem FROM inputs WHERE state IN ('queued', 'seen') AND run < ?",
                (self.run,)))

    def previous_run_started(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MAX(started) FROM runs WHERE id < ?", (self.run,)).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, parameters))

    def write_specimen(self, values: dict[str, Any]) -> None:
        columns = ", ".join(values)
        with self._transaction() as db:
            db.execute(f"INSERT OR REPLACE INTO specimens({columns}) VALUES ({', '.join('?' for _ in values)})",
                       list(values.values()))

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._owner.close()

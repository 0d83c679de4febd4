"""The journal in `RESULTS/results.db` (SQLite, WAL): what happened to every input, so each is analysed once.

Tables: `inputs` (one row per source path: content hash, state, reason, stem, file signature), `results` (the
current result of each analysed content, what `results.csv` and specimen votes are made from), `superseded`
(results replaced by a new content at the same path: history, out of the tables and the vote), `events`
(started/done/failed per run, for auditing), `runs`, `specimens`. A result is committed in one transaction
(results row + input state + event) after its files are renamed into place, so a crash leaves either no trace
or a complete one.

Input states: queued (seen by a source), seen (claimed, being analysed), done, failed, alias (same content as
another path), incomplete (truncated, maybe still being written: read again), ignored (in the folder before
the first watch without `existing`).
"""

from __future__ import annotations

import fcntl
import json
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hep2edge.atomic import OutputWriteError, describe_os_error
from hep2edge.errors import ConfigError
from hep2edge.labels import PATTERNS
from hep2edge.regular_file import Signature

DB_NAME = "results.db"
SCHEMA_VERSION = 3  # PRAGMA user_version: 2 = file signatures + superseded results, 3 = cell_count; newer: refused
RESULT_COLUMNS: tuple[str, ...] = (
    "content_hash", "stem", "source_path", "specimen", "pattern", "pattern_probability", "intensity",
    "intensity_probability", "foreground_fraction", *(f"p_{name}" for name in PATTERNS), "tiles", "cell_count",
    "cell_patterns",
    "model_id", "precision", "backend", "total_ms", "analysed_at",
)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, started REAL NOT NULL, arguments TEXT);
CREATE TABLE IF NOT EXISTS inputs (
    path TEXT PRIMARY KEY, content_hash TEXT, state TEXT NOT NULL, reason TEXT, stem TEXT,
    run INTEGER, updated REAL NOT NULL, size INTEGER, mtime_ns INTEGER);
CREATE INDEX IF NOT EXISTS inputs_hash ON inputs(content_hash);
CREATE TABLE IF NOT EXISTS results ({", ".join(c + (" TEXT PRIMARY KEY" if c == "content_hash" else "")
                                               for c in RESULT_COLUMNS)});
CREATE UNIQUE INDEX IF NOT EXISTS results_stem ON results(stem);
CREATE INDEX IF NOT EXISTS results_specimen ON results(specimen);
CREATE INDEX IF NOT EXISTS results_source ON results(source_path);
CREATE INDEX IF NOT EXISTS inputs_stem ON inputs(stem);
CREATE TABLE IF NOT EXISTS superseded ({", ".join(RESULT_COLUMNS)}, superseded_at REAL, superseded_by TEXT);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, run INTEGER, content_hash TEXT, path TEXT, event TEXT, detail TEXT, at REAL);
CREATE TABLE IF NOT EXISTS specimens (
    specimen TEXT PRIMARY KEY, images INTEGER, complete INTEGER, pattern TEXT, pattern_probability REAL,
    intensity TEXT, intensity_probability REAL, method TEXT, updated REAL);
"""
UNSAFE_STEM = re.compile(r"[^\w.-]+")  # letters and digits of any script stay: `über ä` -> `über_ä`
MAX_STEM_CHARS = 120
FINISHED_STATES = ("done", "failed", "alias", "ignored")


@dataclass(frozen=True)
class Claim:
    """What to do with an input: `analyse` (under `stem`), or skip as `duplicate` / `failed`."""

    action: str
    stem: str = ""
    detail: str = ""


def safe_stem(name: str) -> str:
    """A file-name-safe, still readable stem: NFC, runs of other characters -> `_`, at most 120 characters."""
    stem = UNSAFE_STEM.sub("_", unicodedata.normalize("NFC", name)).strip("._")
    return stem[:MAX_STEM_CHARS].rstrip("._") or "image"


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
            self._check_version()
            self._db.executescript(SCHEMA)
            self._migrate()
            cursor = self._db.execute(
                "INSERT INTO runs(started, arguments) VALUES (?, ?)", (started, json.dumps(arguments or {}))
            )
        except ConfigError:
            self._db.close()
            self._owner.close()
            raise
        except sqlite3.Error as exc:
            self._owner.close()
            raise OutputWriteError(f"{self.path}: cannot open the results database ({exc})") from exc
        self.run = int(cursor.lastrowid or 0)
        self.run_started = started

    def _check_version(self) -> None:
        """ConfigError for a journal a newer hep2edge wrote (its tables may mean something else)."""
        found = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if found > SCHEMA_VERSION:
            raise ConfigError(f"{self.path}: written by a newer hep2edge (journal schema {found}, this one knows "
                              f"{SCHEMA_VERSION}); upgrade hep2edge or pass another `out`")

    def _migrate(self) -> None:
        """Older journals gain the newer columns: file signatures (NULL: treated as unchanged), cell counts."""
        cells = ("cell_count", "cell_patterns")
        added = {"inputs": ("size", "mtime_ns"), "results": cells, "superseded": cells}
        for table, wanted in added.items():
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column in (c for c in wanted if c not in columns):
                kind = "TEXT" if column == "cell_patterns" else "INTEGER"
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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
                f"{self.path.parent}: another hep2edge run is using these RESULTS; stop it or pass another `out`"
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

    def claim(self, path: str, content_hash: str, stem_hint: str, retry_failed: bool = False,
              signature: Signature | None = None) -> Claim:
        """Decide, atomically, whether this run analyses `path` (content `content_hash`, file `signature`)."""
        with self._transaction() as db:
            self._sign(db, path, signature)
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
            stem = self._stem_for(db, path, content_hash, stem_hint)
            self._set(db, path, content_hash, "seen", "", stem)
            self._event(db, content_hash, path, "started")
            return Claim("analyse", stem)

    def _stem_for(self, db: sqlite3.Connection, path: str, content_hash: str, hint: str) -> str:
        """The stem a content hash was given before (crash recovery), else the path's own stem when it held
        another content (a rewrite replaces that result's files), else a free one."""
        previous = db.execute(
            "SELECT stem FROM inputs WHERE content_hash = ? AND stem IS NOT NULL LIMIT 1", (content_hash,)
        ).fetchone()
        if previous is not None:
            return str(previous[0])
        own = db.execute(
            "SELECT stem FROM results WHERE source_path = ? AND stem NOT IN "
            "(SELECT stem FROM inputs WHERE path != ? AND stem IS NOT NULL)", (path, path)
        ).fetchone()
        if own is not None:
            return str(own[0])
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

    def _sign(self, db: sqlite3.Connection, path: str, signature: Signature | None) -> None:
        """Remember the file signature `path` had when read (a restart re-reads it only if it changed)."""
        if signature is not None:
            db.execute(
                "INSERT INTO inputs(path, state, run, updated, size, mtime_ns) VALUES (?, 'queued', ?, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns",
                (path, self.run, time.time(), *signature),
            )

    def _supersede(self, db: sqlite3.Connection, path: str, content_hash: str) -> None:
        """Move the path's older result (another content) to `superseded`: one current result per path.

        If another path still holds that content (an alias), the result stays current under that path.
        """
        for (old,) in db.execute("SELECT content_hash FROM results WHERE source_path = ? AND content_hash != ?",
                                 (path, content_hash)).fetchall():
            alias = db.execute("SELECT path FROM inputs WHERE content_hash = ? AND state = 'alias' AND path != ?",
                               (old, path)).fetchone()
            if alias is not None:
                db.execute("UPDATE results SET source_path = ? WHERE content_hash = ?", (alias[0], old))
                db.execute("UPDATE inputs SET state = 'done', reason = '' WHERE path = ?", (alias[0],))
                continue
            columns = ", ".join(RESULT_COLUMNS)
            db.execute(f"INSERT INTO superseded({columns}, superseded_at, superseded_by) "
                       f"SELECT {columns}, ?, ? FROM results WHERE content_hash = ?", (time.time(), content_hash, old))
            db.execute("DELETE FROM results WHERE content_hash = ?", (old,))
            self._event(db, old, path, "superseded", f"new content {content_hash[:12]} at the same path")

    def complete(self, path: str, row: dict[str, Any]) -> None:
        """Record a finished result: results row (superseding the path's older one), input done, event."""
        columns = ", ".join(RESULT_COLUMNS)
        marks = ", ".join("?" for _ in RESULT_COLUMNS)
        with self._transaction() as db:
            self._supersede(db, path, row["content_hash"])
            db.execute(f"INSERT OR REPLACE INTO results({columns}) VALUES ({marks})",
                       [row.get(c) for c in RESULT_COLUMNS])
            self._set(db, path, row["content_hash"], "done", "", row["stem"])
            self._event(db, row["content_hash"], path, "done")

    def fail(self, path: str, content_hash: str | None, reason: str) -> None:
        with self._transaction() as db:
            self._set(db, path, content_hash, "failed", reason, None)
            self._event(db, content_hash, path, "failed", reason)

    def wait(self, path: str, content_hash: str, reason: str) -> None:
        """An incomplete (truncated) read: not a failure; the input is read again when it changes."""
        with self._transaction() as db:
            self._set(db, path, content_hash, "incomplete", reason, None)
            self._event(db, content_hash, path, "incomplete", reason)

    def ignore(self, files: list[tuple[str, Signature]]) -> None:
        """Files in the folder before the first watch (without `existing`): known, not analysed unless changed."""
        now = time.time()
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO inputs(path, state, reason, run, updated, size, mtime_ns) "
                "VALUES (?, 'ignored', 'in the folder before the first watch', ?, ?, ?, ?)",
                [(path, self.run, now, *signature) for path, signature in files],
            )

    def finished_signatures(self) -> dict[str, Signature | None]:
        """path -> file signature of every input needing nothing more (None: recorded before signatures)."""
        marks = ", ".join("?" for _ in FINISHED_STATES)
        with self._lock:
            rows = self._db.execute(
                f"SELECT path, size, mtime_ns FROM inputs WHERE state IN ({marks})", FINISHED_STATES)
            return {path: None if size is None else (int(size), int(mtime)) for path, size, mtime in rows}

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
                "SELECT path, content_hash, stem FROM inputs WHERE state IN ('queued', 'seen', 'incomplete') "
                "AND run < ?",
                (self.run,)))

    def has_history(self) -> bool:
        """Whether an earlier run used these RESULTS (this start is a restart)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM runs WHERE id < ? LIMIT 1", (self.run,)).fetchone() is not None

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

"""Opening a RESULTS folder's `results.db` beside a running watcher, and the review tables added to it.

The watcher owns `results`, `specimens` and the rest (hep2edge.runtime.journal); review adds `reviews` (the
audit trail: one row per action, never updated or deleted, enforced by triggers) and `exports` (which review
of which specimen went out in which format). Each connection here is short-lived, in WAL mode with a busy
timeout, so a reader never blocks the watcher and a write waits for its turn.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from hep2edge.errors import ConfigError
from hep2edge.runtime.journal import DB_NAME
from hep2edge.runtime.journal import SCHEMA_VERSION as JOURNAL_SCHEMA_VERSION

BUSY_TIMEOUT_S = 30.0
WATCHER_TABLES = ("results", "specimens")
REVIEW_SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT, specimen TEXT NOT NULL, based_on INTEGER, reviewer TEXT NOT NULL,
    at REAL NOT NULL, action TEXT NOT NULL, before TEXT, after TEXT NOT NULL, comment TEXT NOT NULL DEFAULT '',
    model_id TEXT NOT NULL DEFAULT '', verdict_at REAL);
CREATE INDEX IF NOT EXISTS reviews_specimen ON reviews(specimen, id);
CREATE TRIGGER IF NOT EXISTS reviews_no_update BEFORE UPDATE ON reviews
    BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
CREATE TRIGGER IF NOT EXISTS reviews_no_delete BEFORE DELETE ON reviews
    BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
CREATE TABLE IF NOT EXISTS exports (
    id INTEGER PRIMARY KEY, specimen TEXT NOT NULL, review INTEGER NOT NULL, format TEXT NOT NULL,
    file TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS exports_review ON exports(format, review);
"""


def _connect(path: Path) -> sqlite3.Connection:
    """A connection to an existing database file (never creates one), autocommit, WAL-friendly."""
    uri = f"file:{quote(str(path.resolve()))}?mode=rw"
    db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return db


class ResultsDB:
    """A RESULTS folder whose results.db was checked once; `connect()` hands out fresh connections."""

    def __init__(self, results: Path) -> None:
        self.results = Path(results)
        self.path = self.results / DB_NAME
        _check(self.results, self.path)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A short-lived connection; sqlite errors become one-line ConfigErrors."""
        try:
            db = _connect(self.path)
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.path}: cannot open ({exc})") from exc
        try:
            yield db
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path}: {exc}") from exc
        finally:
            db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: a read and the write based on it see no other writer in between.

        The review tables are created here, on the first write: opening or reading RESULTS writes nothing.
        """
        with self.connect() as db:
            db.executescript(REVIEW_SCHEMA)
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")


def has_table(db: sqlite3.Connection, name: str) -> bool:
    """Whether results.db has table `name` yet (the review tables appear with the first review)."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _check(results: Path, path: Path) -> None:
    """ConfigError (nothing written) unless `path` is a results.db this version of hep2edge can read."""
    if not results.is_dir():
        raise ConfigError(f"{results}: no such RESULTS folder")
    if not path.is_file():
        raise ConfigError(f"{results}: no {DB_NAME} here (a RESULTS folder is what `hep2edge watch` or "
                          "`hep2edge analyze` wrote)")
    try:
        db = _connect(path)
    except sqlite3.Error as exc:
        raise ConfigError(f"{path}: cannot open ({exc})") from exc
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: not a readable SQLite database ({exc})") from exc
    finally:
        db.close()
    if version > JOURNAL_SCHEMA_VERSION:
        raise ConfigError(f"{path}: written by a newer hep2edge (journal schema {version}, this one reads up to "
                          f"{JOURNAL_SCHEMA_VERSION}); upgrade hep2edge")
    missing = [name for name in WATCHER_TABLES if name not in tables]
    if missing:
        raise ConfigError(f"{path}: not a hep2edge results database (no table {', '.join(missing)})")

"""The metadata store: SQLite in WAL mode, the source of truth for every object.

Objects are msgspec Structs stored as JSON documents, keyed by kind and id, with the columns
queries need (name, created). Host state (mounts, namespaces, runc containers) is derived from
what is stored here and reconciled at start-up. All writes go through this module.

Calls are synchronous: each is a sub-millisecond local SQLite operation, cheaper than a thread
hop, and the daemon has a single writer (the trio thread).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind    TEXT NOT NULL,
    id      TEXT NOT NULL,
    name    TEXT,
    created TEXT NOT NULL,
    doc     BLOB NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS objects_name ON objects (kind, name);
"""


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        path.chmod(0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._encoder = msgspec.json.Encoder()
        self._depth = 0

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes atomically; nests (only the outermost level commits)."""
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self._db.execute("COMMIT")

    def put(self, kind: str, id_: str, obj: Any, *, name: str | None = None, created: str) -> None:
        """Insert or replace one object."""
        self._db.execute(
            "INSERT OR REPLACE INTO objects (kind, id, name, created, doc) VALUES (?, ?, ?, ?, ?)",
            (kind, id_, name, created, self._encoder.encode(obj)),
        )

    def delete(self, kind: str, id_: str) -> None:
        self._db.execute("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, id_))

    def get(self, kind: str, id_: str, type_: type[T]) -> T | None:
        row = self._db.execute("SELECT doc FROM objects WHERE kind = ? AND id = ?", (kind, id_)).fetchone()
        return None if row is None else msgspec.json.decode(row[0], type=type_)

    def all(self, kind: str, type_: type[T], *, order: str = "created DESC") -> list[T]:
        if order not in ("created DESC", "created ASC", "name ASC"):
            raise ValueError(order)
        rows = self._db.execute(f"SELECT doc FROM objects WHERE kind = ? ORDER BY {order}, id", (kind,))
        decoder = msgspec.json.Decoder(type_)
        return [decoder.decode(doc) for (doc,) in rows]

    def ids_by_name(self, kind: str, name: str) -> list[str]:
        rows = self._db.execute("SELECT id FROM objects WHERE kind = ? AND name = ?", (kind, name))
        return [row[0] for row in rows]

    def ids_by_prefix(self, kind: str, prefix: str) -> list[str]:
        rows = self._db.execute(
            "SELECT id FROM objects WHERE kind = ? AND substr(id, 1, ?) = ?", (kind, len(prefix), prefix)
        )
        return [row[0] for row in rows]

    def exists(self, kind: str, id_: str) -> bool:
        row = self._db.execute("SELECT 1 FROM objects WHERE kind = ? AND id = ?", (kind, id_)).fetchone()
        return row is not None

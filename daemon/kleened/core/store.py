"""The metadata store: SQLite in WAL mode, the source of truth for every object.

Objects are msgspec Structs stored as JSON documents, keyed by kind and id, with the columns
queries need (name, created). Host state (mounts, namespaces, runc containers) is derived from
what is stored here and reconciled at start-up. All writes go through this module.

Calls are synchronous: each is a sub-millisecond local SQLite operation, cheaper than a thread
hop, and the daemon has a single writer (the trio thread).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")
log = logging.getLogger(__name__)

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
# Names are unique in the store itself, not only by a check before an await: an insert that
# would give a second object of these kinds the same name fails (`NameTaken`). Images keep
# their `name:tag` in `name` (NULL when untagged); mounts and endpoints use `name` as a
# non-unique index.
_UNIQUE_KINDS = ("container", "network", "volume", "image")
_UNIQUE_INDEX = """
CREATE UNIQUE INDEX IF NOT EXISTS objects_unique_name ON objects (kind, name)
WHERE name IS NOT NULL AND kind IN ('container', 'network', 'volume', 'image');
"""


class NameTaken(Exception):
    """An insert or update would give an object a name another object of its kind has."""


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
        self._unique_names()

    def _unique_names(self) -> None:
        """Create the unique-name index; a store written before it existed may hold duplicate
        names (two racing creates): those are renamed first, so the daemon always starts."""
        kinds = ", ".join("?" * len(_UNIQUE_KINDS))
        rows = self._db.execute(
            f"SELECT kind, name, id FROM objects WHERE name IS NOT NULL AND kind IN ({kinds}) AND (kind, name) IN "
            "(SELECT kind, name FROM objects WHERE name IS NOT NULL GROUP BY kind, name HAVING count(*) > 1) "
            "ORDER BY kind, name, created, id",
            _UNIQUE_KINDS,
        ).fetchall()
        seen: set[tuple[str, str]] = set()
        for kind, name, id_ in rows:
            if (kind, name) not in seen:
                seen.add((kind, name))  # the oldest keeps its name
                continue
            new_name = None if kind == "image" else f"{name}-{id_}"
            doc = json.loads(self._db.execute("SELECT doc FROM objects WHERE kind = ? AND id = ?",
                                              (kind, id_)).fetchone()[0])
            doc.update({"name": "", "tag": ""} if kind == "image" else {"name": new_name})
            self._db.execute("UPDATE objects SET name = ?, doc = ? WHERE kind = ? AND id = ?",
                             (new_name, json.dumps(doc).encode(), kind, id_))
            log.warning("renamed a %s with a duplicate name", kind,
                        extra={"id": id_, "old_name": name, "new_name": new_name})
        self._db.executescript(_UNIQUE_INDEX)

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
        """Insert or replace one object. Raises `NameTaken` (and writes nothing) when another
        object of a kind with unique names already has `name`."""
        try:
            self._db.execute(
                "INSERT INTO objects (kind, id, name, created, doc) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (kind, id) DO UPDATE SET name = excluded.name, created = excluded.created, "
                "doc = excluded.doc",
                (kind, id_, name, created, self._encoder.encode(obj)),
            )
        except sqlite3.IntegrityError as exc:
            raise NameTaken(f"{kind} name '{name}' is taken") from exc

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

"""The MQTT output's bounded on-disk queue: decisions wait here until the broker acknowledged them.

One SQLite file (WAL journal, ``synchronous=NORMAL``: a commit is a write to
the log, no fsync per decision) with two tables: ``messages`` (``seq``,
enqueue wall time, JSON payload) in ``seq`` order, and ``state`` (the next
``seq`` and the dropped count), so numbering continues after a restart and
messages not yet acknowledged are sent when the daemon comes back.

When ``max_messages`` are queued, pushing one more deletes the *oldest*
first and counts it in :attr:`MessageQueue.dropped`. One connection is
shared by the scheduler thread (push) and the publisher and network threads
(peek, delete) under a lock; every operation is one short transaction.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_mer.errors import ConfigError

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, queued REAL NOT NULL, payload TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)


@dataclass(frozen=True)
class QueueStats:
    """What /healthz and /metrics show of the queue: its size, the oldest message's age, the dropped count."""

    size: int
    oldest_age_s: float | None
    dropped: int
    next_seq: int


class MessageQueue:
    """A bounded FIFO of ``(seq, payload)`` in SQLite; ``seq`` increases by 1 per message, across restarts."""

    def __init__(self, path: Path, max_messages: int) -> None:
        if max_messages < 1:
            raise ConfigError(f"outputs.mqtt.queue_max must be >= 1, got {max_messages}")
        self.path = path
        self.max_messages = max_messages
        self._lock = threading.Lock()
        self._db = self._connect(path)
        self.next_seq = self._state("next_seq")
        self.dropped = self._state("dropped")
        self._size = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=5.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                db.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"outputs.mqtt.queue_path: cannot open the queue {str(path)!r}: {exc}") from exc
        return db

    def _state(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def push(self, payload: Callable[[int], str]) -> int:
        """Queue ``payload(seq)`` under the next ``seq`` (dropping the oldest beyond the bound); returns ``seq``."""
        with self._lock:
            seq = self.next_seq
            text = payload(seq)
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT INTO messages VALUES (?, ?, ?)", (seq, time.time(), text))
                excess = self._size + 1 - self.max_messages
                if excess > 0:
                    db.execute("DELETE FROM messages WHERE seq IN (SELECT seq FROM messages ORDER BY seq LIMIT ?)",
                               (excess,))
                db.execute("INSERT OR REPLACE INTO state VALUES ('next_seq', ?)", (seq + 1,))
                if excess > 0:
                    db.execute("INSERT OR REPLACE INTO state VALUES ('dropped', ?)", (self.dropped + excess,))
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
            self.next_seq = seq + 1
            self._size += 1 - max(0, excess)
            if excess > 0:
                if self.dropped == 0:
                    log.warning("MQTT queue full (%d messages): dropping the oldest", self.max_messages)
                self.dropped += excess
            return seq

    def peek(self, after_seq: int, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` queued ``(seq, payload)`` with ``seq > after_seq``, oldest first."""
        with self._lock:
            return self._db.execute("SELECT seq, payload FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (after_seq, limit)).fetchall()

    def delete(self, seq: int) -> None:
        """Forget message ``seq`` (the broker acknowledged it); a missing one (dropped meanwhile) is fine."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
            self._size -= cursor.rowcount

    def stats(self) -> QueueStats:
        """The queue's size, its oldest message's age (None when empty) and the dropped count."""
        with self._lock:
            row = self._db.execute("SELECT queued FROM messages ORDER BY seq LIMIT 1").fetchone()  # by the key
            age = None if row is None else round(max(0.0, time.time() - row[0]), 3)
            return QueueStats(self._size, age, self.dropped, self.next_seq)

    def close(self) -> None:
        """Checkpoint and close the database. Idempotent."""
        with self._lock:
            db, self._db = self._db, None  # type: ignore[assignment]
        if db is not None:
            try:
                db.close()
            except sqlite3.Error as exc:
                log.warning("closing the MQTT queue %s failed: %s", self.path, exc)

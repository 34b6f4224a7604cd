"""`LocalEventStream`: the event stream as a durable queue in one SQLite file.

The embedded default when neither Kafka nor Redis is configured. Several processes share the file
(the gateway appends, a stream worker reads): WAL mode lets readers and one writer overlap, and every
state change runs in one `BEGIN IMMEDIATE` transaction, so two consumers never lease the same record.
`synchronous=FULL` makes a committed append survive a process or power crash.

Tables: `records` (the stream, append order = rowid order), `groups` (per group, the highest record
id handed out), `leases` (per group, records handed out and not acked: consumer, deadline,
deliveries), `dead` (dead letters). Records are kept after every group acked them (as in a Redis
stream, a group that first reads later starts at the beginning); the file grows with the stream.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from streams.base import DeadLetter, StreamError, StreamRecord

#: How often an empty `read` looks again for new records; other processes append without a signal.
POLL_S = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    grp TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    grp TEXT NOT NULL,
    id INTEGER NOT NULL,
    consumer TEXT NOT NULL,
    until REAL NOT NULL,
    deliveries INTEGER NOT NULL,
    PRIMARY KEY (grp, id)
);
CREATE INDEX IF NOT EXISTS leases_until ON leases (grp, until);
CREATE TABLE IF NOT EXISTS dead (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    grp TEXT NOT NULL,
    id INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    deliveries INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""


class LocalEventStream:
    """A durable, multi-process queue of keyed records in `<folder>/<name>.sqlite3`.

    Args:
        folder: where the queue file lives (`Settings.streams_dir`); created on first use.
        name: the stream, also the file name.
        reclaim_after_s: a leased record not acked this long goes to the next reader of its group.
        busy_timeout_s: how long to wait for another process's transaction before giving up with
            `StreamError`.

    Nothing touches the disk until the first call, so constructing one never fails.
    """

    def __init__(
        self, folder: Path | str, name: str, *, reclaim_after_s: float = 30.0, busy_timeout_s: float = 10.0
    ) -> None:
        self.name = name
        self.path = Path(folder) / f"{name}.sqlite3"
        self.reclaim_after_s = reclaim_after_s
        self.busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, shared by the caller's threads

    def append(self, records: Sequence[tuple[str, bytes]]) -> None:
        if not records:
            return
        with self._transaction() as db:
            db.executemany("INSERT INTO records (key, value) VALUES (?, ?)", [(k, bytes(v)) for k, v in records])

    def read(self, group: str, consumer: str, max_records: int, timeout_s: float) -> list[StreamRecord]:
        deadline = time.monotonic() + timeout_s
        while True:
            got = self._lease(group, consumer, max_records)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            time.sleep(min(POLL_S, left))

    def ack(self, group: str, records: Sequence[StreamRecord]) -> None:
        if not records:
            return
        with self._transaction() as db:
            db.executemany("DELETE FROM leases WHERE grp = ? AND id = ?", [(group, int(r.id)) for r in records])

    def dead_letter(self, group: str, record: StreamRecord, reason: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO dead (grp, id, key, value, deliveries, reason) VALUES (?, ?, ?, ?, ?, ?)",
                (group, int(record.id), record.key, record.value, record.deliveries, reason),
            )
            db.execute("DELETE FROM leases WHERE grp = ? AND id = ?", (group, int(record.id)))

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT id, key, value, deliveries, reason FROM dead ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [DeadLetter(StreamRecord(str(i), k, bytes(v), d), reason) for i, k, v, d, reason in rows]

    def lag(self, group: str) -> int:
        with self._transaction(write=False) as db:
            row = db.execute("SELECT cursor FROM groups WHERE grp = ?", (group,)).fetchone()
            cursor = row[0] if row else 0
            new = db.execute("SELECT COUNT(*) FROM records WHERE id > ?", (cursor,)).fetchone()[0]
            leased = db.execute("SELECT COUNT(*) FROM leases WHERE grp = ?", (group,)).fetchone()[0]
        return int(new + leased)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- internals ------------------------------------------------------------------------------

    def _lease(self, group: str, consumer: str, max_records: int) -> list[StreamRecord]:
        """Records for `consumer`: expired leases of the group first (any consumer's, its own
        included), then records no one in the group has had yet."""
        now = time.time()
        until = now + self.reclaim_after_s
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO groups (grp, cursor) VALUES (?, 0)", (group,))
            expired = db.execute(
                "SELECT l.id, r.key, r.value, l.deliveries + 1 FROM leases l JOIN records r ON r.id = l.id"
                " WHERE l.grp = ? AND l.until <= ? ORDER BY l.id LIMIT ?",
                (group, now, max_records),
            ).fetchall()
            db.executemany(
                "UPDATE leases SET consumer = ?, until = ?, deliveries = ? WHERE grp = ? AND id = ?",
                [(consumer, until, d, group, i) for i, _, _, d in expired],
            )
            cursor = db.execute("SELECT cursor FROM groups WHERE grp = ?", (group,)).fetchone()[0]
            fresh = db.execute(
                "SELECT id, key, value, 1 FROM records WHERE id > ? ORDER BY id LIMIT ?",
                (cursor, max_records - len(expired)),
            ).fetchall()
            if fresh:
                db.executemany(
                    "INSERT INTO leases (grp, id, consumer, until, deliveries) VALUES (?, ?, ?, ?, 1)",
                    [(group, i, consumer, until) for i, _, _, _ in fresh],
                )
                db.execute("UPDATE groups SET cursor = ? WHERE grp = ?", (fresh[-1][0], group))
        return [StreamRecord(str(i), k, bytes(v), d) for i, k, v, d in [*expired, *fresh]]

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(_SCHEMA)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction (`BEGIN IMMEDIATE` when it writes: it takes the write lock up front, so
        two processes leasing at once queue instead of failing on upgrade); errors -> StreamError."""
        with self._lock:
            try:
                db = self._connect()
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as err:
                raise StreamError(f"local stream {self.path}: {err}") from err

"""The durable outbox: an MQTT client's session state in a SQLite file.

With ``Client(url, store="outbox.sqlite")`` the QoS 1 and 2 publishes a client has
accepted and not finished, and the identifiers of incoming QoS 2 publishes it received
and the server has not released, live in this file as well as in memory. The client
writes every change (`SessionChange`) to the file, in one transaction per batch, before
it writes the bytes that follow from it to the network. A process killed at any moment
therefore restarts from a state the server agrees with: publishes it had accepted are
sent (again) after the next connect, and a QoS 2 publish it had received is not
delivered twice.

Durability: the file is in WAL mode. ``synchronous="normal"`` (the default) survives the
process being killed; ``"full"`` also survives a power cut, at the price of an fsync per
batch.

When the outbox is full (``max_messages`` publishes or ``max_bytes`` of payload and
topic), a new publish waits (the asyncio client) or is refused with `OutboxFull`
(`Outbox.add_room()` tells which); nothing already in the outbox is ever dropped.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from tether.errors import InvalidState
from tether.mqtt.packets import MQTT_5, Publish, decode, encode
from tether.mqtt.protocol import PendingPublish, SessionChange

__all__ = ["Outbox", "OutboxEntry", "OutboxFull"]

_SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outgoing (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    packet_id INTEGER NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    qos INTEGER NOT NULL,
    size INTEGER NOT NULL,
    released INTEGER NOT NULL DEFAULT 0,
    packet BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS received (packet_id INTEGER PRIMARY KEY);
"""


class OutboxFull(InvalidState):
    """The outbox holds ``max_messages`` publishes or ``max_bytes``: wait for some to finish."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One publish waiting in the outbox (see `Outbox.entries()`).

    Attributes:
        seq: its place in the order publishes were accepted (1, 2, ... for ever).
        packet_id: its MQTT packet identifier.
        topic, qos: as published.
        size: bytes of topic and payload.
        released: QoS 2 with PUBREC received: only PUBCOMP is missing.
    """

    seq: int
    packet_id: int
    topic: str
    qos: int
    size: int
    released: bool


class Outbox:
    """An MQTT session's durable state in a SQLite file.

    Args:
        path: the file; created with its folder when missing.
        max_messages: the most publishes it holds.
        max_bytes: the most bytes of topic and payload it holds.
        synchronous: "normal" survives a killed process, "full" also a power cut.

    Raises:
        ValueError: for a bound below 1 or an unknown synchronous mode.
        sqlite3.DatabaseError: if the file is not an outbox.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_messages: int = 100_000,
        max_bytes: int = 64 * 2**20,
        synchronous: Literal["normal", "full"] = "normal",
    ) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError(f"outbox bounds must be positive: {max_messages=} {max_bytes=}")
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous {synchronous!r} is not 'normal' or 'full'")
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN ... COMMIT in apply()).
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
            version = self._meta("schema")
            if version is None:
                self._set_meta("schema", str(_SCHEMA_VERSION))
            elif version != str(_SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"{self.path} has outbox schema {version}, not {_SCHEMA_VERSION}")
            count, size = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM outgoing").fetchone()
        except BaseException:
            self._db.close()
            raise
        self._count: int = count
        self._bytes: int = size

    def close(self) -> None:
        """Close the file; the outbox is unusable afterwards."""
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- metadata --------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def client_id(self) -> str | None:
        """The client identifier of the session this outbox belongs to, once known."""
        return self._meta("client_id")

    def claim(self, client_id: str) -> None:
        """Bind the outbox to a client identifier (done by the client at its first connect).

        Raises:
            ValueError: if it holds the session of another client identifier.
        """
        known = self.client_id
        if known is None:
            self._set_meta("client_id", client_id)
        elif known != client_id:
            raise ValueError(f"outbox {self.path} belongs to client {known!r}, not {client_id!r}")

    @property
    def sequence(self) -> int:
        """How many publishes were ever added: a counter that survives restarts.

        A producer that numbers its messages can resume after a crash from here:
        every message numbered below it is in the outbox or was delivered.
        """
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outgoing'").fetchone()
        return 0 if row is None else int(row[0])

    # --- bounds ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def size(self) -> int:
        """Bytes of topic and payload held."""
        return self._bytes

    def has_room(self, size: int, *, unwritten: int = 0, unwritten_size: int = 0) -> bool:
        """Whether a publish of ``size`` bytes of topic and payload fits now.

        Args:
            size: bytes of topic and payload of the publish.
            unwritten, unwritten_size: publishes (and their bytes) accepted but not yet
                written with `apply()`, which count as if they were.

        An outbox that is empty always takes one publish, however big.
        """
        count = self._count + unwritten
        if not count:
            return True
        return count < self.max_messages and self._bytes + unwritten_size + size <= self.max_bytes

    # --- state -----------------------------------------------------------------------------

    def load(self) -> tuple[list[PendingPublish], list[int]]:
        """Read the session state, for `Connection.restore()`.

        Returns:
            (outgoing publishes in the order they were accepted, packet identifiers of
            received QoS 2 publishes not yet released).
        """
        pending: list[PendingPublish] = []
        for packet_id, released, blob in self._db.execute(
            "SELECT packet_id, released, packet FROM outgoing ORDER BY seq"
        ):
            result = decode(blob, MQTT_5, max_size=len(blob))
            if result is None or not isinstance(result[0], Publish) or result[0].packet_id != packet_id:
                raise sqlite3.DatabaseError(f"outbox {self.path}: publish {packet_id} is damaged")
            pending.append(PendingPublish(result[0], queued=not released, released=bool(released)))
        received = [row[0] for row in self._db.execute("SELECT packet_id FROM received ORDER BY packet_id")]
        return pending, received

    def entries(self) -> list[OutboxEntry]:
        """The publishes waiting, in the order they were accepted (for `tether mqtt outbox`)."""
        rows = self._db.execute(
            "SELECT seq, packet_id, topic, qos, size, released FROM outgoing ORDER BY seq"
        )
        return [OutboxEntry(s, p, t, q, z, bool(r)) for s, p, t, q, z, r in rows]

    def received(self) -> list[int]:
        """Packet identifiers of incoming QoS 2 publishes received and not yet released."""
        return [row[0] for row in self._db.execute("SELECT packet_id FROM received ORDER BY packet_id")]

    def apply(self, changes: Iterable[SessionChange]) -> None:
        """Write session changes, in order, in one transaction; durable on return."""
        db = self._db
        count, size_total = self._count, self._bytes
        db.execute("BEGIN")
        try:
            for change in changes:
                kind = change.kind
                if kind == "add":
                    packet = change.publish
                    assert packet is not None and packet.packet_id is not None
                    size = _size(packet)
                    db.execute(
                        "INSERT INTO outgoing (packet_id, topic, qos, size, packet) VALUES (?, ?, ?, ?, ?)",
                        (packet.packet_id, packet.topic, packet.qos, size, encode(packet, MQTT_5)),
                    )
                    count += 1
                    size_total += size
                elif kind == "done":
                    row = db.execute(
                        "SELECT size FROM outgoing WHERE packet_id = ?", (change.packet_id,)
                    ).fetchone()
                    if row is not None:
                        db.execute("DELETE FROM outgoing WHERE packet_id = ?", (change.packet_id,))
                        count -= 1
                        size_total -= row[0]
                elif kind == "release":
                    db.execute("UPDATE outgoing SET released = 1 WHERE packet_id = ?", (change.packet_id,))
                elif kind == "received":
                    db.execute("INSERT OR IGNORE INTO received (packet_id) VALUES (?)", (change.packet_id,))
                elif kind == "released":
                    db.execute("DELETE FROM received WHERE packet_id = ?", (change.packet_id,))
                else:  # "clear_received"
                    db.execute("DELETE FROM received")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._count, self._bytes = count, size_total


def _size(packet: Publish) -> int:
    return len(packet.topic.encode()) + len(packet.payload)

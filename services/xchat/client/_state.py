"""The device's local state in SQLite: identity, prekeys, sessions, inbox, outbox.

Everything the ratchet changes is written in the same transaction as what it
produced: a sent ciphertext enters the outbox together with the advanced
session (so a retry resends the same bytes, never re-encrypts); a received
plaintext enters the inbox together with the advanced session (a
redelivered ciphertext cannot be decrypted twice, so its plaintext must
already be here). Ids acknowledged by the app move to ``seen``, and their
mailbox sequences wait in ``pending_acks`` until the server confirmed the
delete (so an ack is never lost to a reconnect or a restart).

Durability (docs/adr/0007-sdk-send-path.md): WAL, and ``synchronous=FULL``
(the default of ``begin()`` and ``transaction()``) for every transaction a
network peer may act on (outbox ciphertexts and the advanced ratchet before
they leave; received plaintexts before they are acknowledged): a ratchet rolled back by power loss after its ciphertext left
would reuse a message key. The hot paths (a send batch, a received batch)
commit with ``durable=False`` instead and ``await sync()`` before anything
leaves or reaches the app: the same guarantee, with one fsync off the event
loop shared by every commit made meanwhile (``_walsync``). Book-keeping whose loss only repeats harmless work
(an outbox row removed after the server's ack, an app's ack) commits with
``durable=False`` (``synchronous=NORMAL``: lost on power loss only, never on a
process crash); ``set_meta`` outside a transaction is durable. Callers group
many rows into one transaction.

At rest (docs/adr/0012-sdk-state-at-rest.md): with a ``state_key`` every secret
value (meta values, sessions, inbox plaintexts, outbox envelopes) is sealed
by ``_atrest.AeadFields`` bound to its row; without one, stored as it is.

Meta rows are read far more often than written (our account and device id,
the profile key and its registration, pinned account keys, on every message),
so ``get_meta`` keeps what it read or wrote in memory, as this connection sees
it: written through by ``set_meta``/``delete_meta`` (the only writers of the
table), dropped whole by every rollback (a transaction's or a savepoint's),
bounded in entries and value size. The file stays the only durable copy.

Secure deletion: ``secure_delete=ON``, and every method that replaces or
deletes a secret calls ``_superseded()``, so that the commit has
``_scrub.WalScrubber`` checkpoint and truncate the WAL (coalesced, at most
one per ``SCRUB_DELAY_S``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xchat.client._atrest import CHECK_META_KEY, AeadFields, FieldCipher, PlainFields, location
from xchat.client._scrub import WalScrubber
from xchat.client._walsync import WalSync
from xchat.client.errors import StateKeyError

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    peer_device TEXT PRIMARY KEY, peer_account TEXT NOT NULL, state BLOB NOT NULL, updated_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_by_account ON sessions(peer_account);
CREATE TABLE IF NOT EXISTS counters (peer_account TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    message_id BLOB NOT NULL, recipient_device TEXT NOT NULL, recipient_account TEXT NOT NULL,
    ciphertext BLOB NOT NULL, created_ms INTEGER NOT NULL, ttl_s INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, recipient_device));
CREATE TABLE IF NOT EXISTS inbox (
    message_id BLOB PRIMARY KEY, sender_account TEXT NOT NULL, sender_device TEXT NOT NULL,
    payload BLOB NOT NULL, received_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen (message_id BLOB PRIMARY KEY, acked_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending_acks (sequence INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS resendable (
    message_id BLOB NOT NULL, recipient_device TEXT NOT NULL, recipient_account TEXT NOT NULL,
    payload BLOB NOT NULL, created_ms INTEGER NOT NULL,
    PRIMARY KEY (message_id, recipient_device));
CREATE INDEX IF NOT EXISTS resendable_by_age ON resendable(created_ms);
"""
# Meta rows read before the key is known, or that are the key check: never sealed.
_PLAIN_META = frozenset({"schema_version", CHECK_META_KEY})
# Longest a superseded key or acknowledged plaintext stays in the WAL while the
# client runs. Each scrub costs two fsyncs (~4 ms here) on the event loop, and
# one process may run many clients (the bench's online crowd): at most one
# scrub per client per second keeps that under 0.5 % of a loop per client.
SCRUB_DELAY_S = 1.0
# The meta read cache (``get_meta``): entries kept (the oldest go first; keys per
# message id exist, e.g. ``group_read:``), and the largest value kept (the prekey
# store, read once per rotation, is not worth holding).
META_CACHE_ENTRIES = 4096
META_CACHE_VALUE_MAX = 16 * 1024


@dataclass(frozen=True, slots=True)
class OutboxItem:
    message_id: bytes
    recipient_device: str
    recipient_account: str
    ciphertext: bytes
    # The relay's TTL hint (disappearing messages, ``_conversation``): 0 = the mailbox's own.
    ttl_s: int = 0


@dataclass(frozen=True, slots=True)
class InboxItem:
    message_id: bytes
    sender_account: str
    sender_device: str
    payload: bytes


def _now() -> int:
    return int(time.time() * 1000)


class LocalState:
    def __init__(self, path: Path | str, *, state_key: bytes | None = None, scrub_delay: float = SCRUB_DELAY_S) -> None:
        """Opens (or creates) the state file; ``state_key`` seals every secret value in it.

        A plain file opened with a key is encrypted in place (one transaction).
        Raises ``StateKeyError`` (and changes nothing) when the file is
        encrypted and the key is missing or wrong.
        """
        fields: FieldCipher = AeadFields(state_key) if state_key is not None else PlainFields()
        self._fields = fields
        self._closed = False
        self._db = sqlite3.connect(str(path), isolation_level=None)
        # Meta values (opened) as this connection reads them; None: no row (see the module docstring).
        self._meta: dict[str, bytes | None] = {}
        # The open transaction wrote meta rows: if it ends without ``commit`` or ``rollback``
        # (SQLite rolls back by itself after some I/O errors), ``get_meta`` forgets them.
        self._meta_uncommitted = False
        self._scrubber = WalScrubber(self._db, delay=scrub_delay)
        # Group fsync off the loop for the hot paths' commits (``_walsync``): ``await sync()``.
        self._wal = WalSync(path)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA secure_delete=ON")
            # The connection's default is NORMAL (the frequent, book-keeping
            # commits: acks, outbox removals); ``transaction()`` raises it to FULL
            # for the durable ones (a batch each).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._durable = False
            self._db.executescript(SCHEMA)
            _add_outbox_ttl(self._db)
            self._unlock(fields, path)
            version = self.get_meta("schema_version")
            if version is None:
                self.set_meta("schema_version", str(SCHEMA_VERSION).encode())
            elif int(version) > SCHEMA_VERSION:
                raise RuntimeError(f"state file {path} is from a newer SDK (schema {int(version)})")
            self._scrubber.now()  # a run that crashed may have left superseded keys in the WAL
        except BaseException:
            self._db.close()
            raise

    @property
    def encrypted(self) -> bool:
        """True when secret values are sealed under the app's state key."""
        return self._fields.encrypted

    def _unlock(self, fields: FieldCipher, path: Path | str) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (CHECK_META_KEY,)).fetchone()
        check = bytes(row[0]) if row else None
        if isinstance(fields, AeadFields):
            if check is None:
                self._seal_existing(fields)
            elif not fields.matches(check):
                raise StateKeyError(f"state file {path} is encrypted under another state_key: nothing was read or changed")
        elif check is not None:
            raise StateKeyError(f"state file {path} is encrypted: pass its state_key to Client.open")

    def _seal_existing(self, fields: AeadFields) -> None:
        """Encrypts every value of a plain file in place, and records the key check, atomically."""
        with self.transaction():
            meta = self._db.execute("SELECT key, value FROM meta").fetchall()
            for key, value in meta:
                if key not in _PLAIN_META:
                    sealed = fields.seal(location("meta", key), bytes(value))
                    self._db.execute("UPDATE meta SET value = ? WHERE key = ?", (sealed, key))
            for device, account, state in self._db.execute("SELECT peer_device, peer_account, state FROM sessions").fetchall():
                sealed = fields.seal(_session_at(device, account), bytes(state))
                self._db.execute("UPDATE sessions SET state = ? WHERE peer_device = ?", (sealed, device))
            inbox = self._db.execute("SELECT message_id, sender_account, sender_device, payload FROM inbox").fetchall()
            for message_id, account, device, payload in inbox:
                sealed = fields.seal(_inbox_at(bytes(message_id), account, device), bytes(payload))
                self._db.execute("UPDATE inbox SET payload = ? WHERE message_id = ?", (sealed, message_id))
            outbox = self._db.execute("SELECT message_id, recipient_device, recipient_account, ciphertext FROM outbox")
            for message_id, device, account, ciphertext in outbox.fetchall():
                sealed = fields.seal(_outbox_at(bytes(message_id), device, account), bytes(ciphertext))
                self._db.execute(
                    "UPDATE outbox SET ciphertext = ? WHERE message_id = ? AND recipient_device = ?",
                    (sealed, message_id, device),
                )
            resendable = self._db.execute("SELECT message_id, recipient_device, recipient_account, payload FROM resendable")
            for message_id, device, account, payload in resendable.fetchall():
                sealed = fields.seal(_resendable_at(bytes(message_id), device, account), bytes(payload))
                self._db.execute(
                    "UPDATE resendable SET payload = ? WHERE message_id = ? AND recipient_device = ?",
                    (sealed, message_id, device),
                )
            self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (CHECK_META_KEY, fields.check_value()))
            self._scrubber.pending = True  # the plain values' pages

    def close(self) -> None:
        if self._closed:
            return
        self._scrubber.close()
        self._closed = True
        self._db.close()

    def _superseded(self) -> None:
        """A secret was replaced or deleted: scrub the WAL once this is committed."""
        self._scrubber.superseded()

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for SDK modules that own tables of their own (``_conversation``):
        they write in the same transactions, and call ``scrub_after_commit`` after deleting a secret."""
        return self._db

    def scrub_after_commit(self) -> None:
        self._superseded()

    def seal_field(self, at: str, value: bytes) -> bytes:
        """``value`` sealed under the state key (as stored), bound to ``at``; as is without a key."""
        return self._fields.seal(at, value)

    def open_field(self, at: str, stored: bytes) -> bytes:
        return self._fields.open(at, stored)

    def replace_inbox_payload(self, message_id: bytes, payload: bytes) -> bool:
        """Replaces the plaintext of an unacknowledged message (an edit); False when it is not in the inbox."""
        row = self._db.execute("SELECT sender_account, sender_device FROM inbox WHERE message_id = ?", (message_id,)).fetchone()
        if row is None:
            return False
        sealed = self._fields.seal(_inbox_at(message_id, row[0], row[1]), payload)
        self._db.execute("UPDATE inbox SET payload = ? WHERE message_id = ?", (sealed, message_id))
        self._superseded()  # the text it replaced
        return True

    def delete_resendable(self, message_ids: Iterable[bytes]) -> None:
        """Forgets sent plaintexts kept for re-sending (disappearing messages that are due)."""
        self._db.executemany("DELETE FROM resendable WHERE message_id = ?", [(m,) for m in message_ids])
        self._superseded()

    async def sync(self) -> None:
        """Every transaction committed so far is on disk (``durable=False`` ones included) when this returns."""
        await self._wal.sync()

    def commit(self) -> None:
        self._db.execute("COMMIT")
        self._meta_uncommitted = False
        self._scrubber.committed()

    def rollback(self) -> None:
        self._meta.clear()  # first: SQLite may have rolled back already (an I/O error), and ROLLBACK then raises
        self._meta_uncommitted = False
        self._db.execute("ROLLBACK")

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested unit inside an open transaction: undone alone if it raises."""
        self._db.execute("SAVEPOINT unit")
        try:
            yield
        except BaseException:
            self._meta.clear()
            self._db.execute("ROLLBACK TO unit")
            self._db.execute("RELEASE unit")
            raise
        self._db.execute("RELEASE unit")

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def _synchronous(self, durable: bool) -> None:
        if durable != self._durable:
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable

    def begin(self, *, durable: bool = True) -> None:
        """Starts a transaction; ``durable=False`` commits without fsync (survives a process crash, not power loss)."""
        self._synchronous(durable)
        if self._meta_uncommitted:  # the last transaction that wrote meta ended unseen: rolled back
            self._meta.clear()
            self._meta_uncommitted = False
        self._db.execute("BEGIN IMMEDIATE")

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[None]:
        """One transaction, committed on success, rolled back on any exception."""
        self.begin(durable=durable)
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    # -- meta ----------------------------------------------------------
    def get_meta(self, key: str) -> bytes | None:
        if self._meta_uncommitted and not self._db.in_transaction:
            self._meta.clear()  # the transaction that wrote them ended unseen: rolled back
            self._meta_uncommitted = False
        try:
            return self._meta[key]
        except KeyError:
            pass
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            value = None
        else:
            value = bytes(row[0]) if key in _PLAIN_META else self._fields.open(location("meta", key), bytes(row[0]))
        self._remember(key, value)
        return value

    def _remember(self, key: str, value: bytes | None) -> None:
        if value is not None and len(value) > META_CACHE_VALUE_MAX:
            self._meta.pop(key, None)
            return
        if key not in self._meta and len(self._meta) >= META_CACHE_ENTRIES:
            del self._meta[next(iter(self._meta))]
        self._meta[key] = value

    def set_meta(self, key: str, value: bytes) -> None:
        if not self._db.in_transaction:
            self._synchronous(True)  # identity, prekeys, tokens: the server acts on them
        stored = value if key in _PLAIN_META else self._fields.seal(location("meta", key), value)
        self._meta.pop(key, None)  # until the write is known to have happened
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, stored))
        self._remember(key, bytes(value))
        self._meta_uncommitted |= self._db.in_transaction
        self._superseded()  # the value it replaced (a prekey store, a profile key)

    def delete_meta(self, key: str) -> None:
        if not self._db.in_transaction:
            self._synchronous(True)
        self._meta.pop(key, None)
        self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
        self._remember(key, None)
        self._meta_uncommitted |= self._db.in_transaction
        self._superseded()

    # -- sessions ------------------------------------------------------
    def session(self, peer_device: str) -> bytes | None:
        row = self._db.execute(
            "SELECT state, peer_account FROM sessions WHERE peer_device = ?", (peer_device,)
        ).fetchone()
        return self._fields.open(_session_at(peer_device, row[1]), bytes(row[0])) if row else None

    def session_account(self, peer_device: str) -> str | None:
        """The account the session with ``peer_device`` was filed under (None: no session)."""
        row = self._db.execute("SELECT peer_account FROM sessions WHERE peer_device = ?", (peer_device,)).fetchone()
        return str(row[0]) if row else None

    def session_devices(self, peer_account: str) -> list[str]:
        rows = self._db.execute("SELECT peer_device FROM sessions WHERE peer_account = ? ORDER BY peer_device", (peer_account,))
        return [r[0] for r in rows]

    def put_session(self, peer_device: str, peer_account: str, state: bytes) -> None:
        stored = self._fields.seal(_session_at(peer_device, peer_account), state)
        self._db.execute(
            "INSERT OR REPLACE INTO sessions(peer_device, peer_account, state, updated_ms) VALUES (?, ?, ?, ?)",
            (peer_device, peer_account, stored, _now()),
        )
        self._superseded()  # the previous state's chain keys

    def next_counter(self, peer_account: str) -> int:
        row = self._db.execute("SELECT next FROM counters WHERE peer_account = ?", (peer_account,)).fetchone()
        value = int(row[0]) if row else 1
        self._db.execute("INSERT OR REPLACE INTO counters(peer_account, next) VALUES (?, ?)", (peer_account, value + 1))
        return value

    # -- outbox --------------------------------------------------------
    def add_outbox(self, item: OutboxItem) -> None:
        self._db.execute(
            "INSERT INTO outbox(message_id, recipient_device, recipient_account, ciphertext, created_ms, ttl_s)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (item.message_id, item.recipient_device, item.recipient_account, self._seal_outbox(item), _now(), item.ttl_s),
        )

    def _seal_outbox(self, item: OutboxItem) -> bytes:
        return self._fields.seal(_outbox_at(item.message_id, item.recipient_device, item.recipient_account), item.ciphertext)

    def remove_outbox(self, message_id: bytes, recipient_device: str) -> None:
        """The message left the outbox: stored by the server, or refused for good."""
        self._db.execute(
            "DELETE FROM outbox WHERE message_id = ? AND recipient_device = ?", (message_id, recipient_device)
        )

    def remove_outbox_many(self, keys: Iterable[tuple[bytes, str]]) -> None:
        self._db.executemany("DELETE FROM outbox WHERE message_id = ? AND recipient_device = ?", list(keys))

    def pending_outbox(self) -> list[OutboxItem]:
        # rowid is insertion order (always above every row present); a wall
        # clock can step back, so created_ms must not decide the order.
        rows = self._db.execute(
            "SELECT message_id, recipient_device, recipient_account, ciphertext, ttl_s FROM outbox ORDER BY rowid"
        )
        return [
            OutboxItem(bytes(r[0]), r[1], r[2], self._fields.open(_outbox_at(bytes(r[0]), r[1], r[2]), bytes(r[3])), int(r[4]))
            for r in rows
        ]

    # -- inbox and seen ------------------------------------------------
    def inbox_item(self, message_id: bytes) -> InboxItem | None:
        row = self._db.execute(
            "SELECT sender_account, sender_device, payload FROM inbox WHERE message_id = ?", (message_id,)
        ).fetchone()
        if row is None:
            return None
        payload = self._fields.open(_inbox_at(message_id, row[0], row[1]), bytes(row[2]))
        return InboxItem(message_id, row[0], row[1], payload)

    def add_inbox(self, item: InboxItem) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO inbox(message_id, sender_account, sender_device, payload, received_ms) VALUES (?, ?, ?, ?, ?)",
            (
                item.message_id,
                item.sender_account,
                item.sender_device,
                self._fields.seal(_inbox_at(item.message_id, item.sender_account, item.sender_device), item.payload),
                _now(),
            ),
        )

    def was_seen(self, message_id: bytes) -> bool:
        return self._db.execute("SELECT 1 FROM seen WHERE message_id = ?", (message_id,)).fetchone() is not None

    def mark_seen(self, message_id: bytes) -> None:
        self._db.execute("INSERT OR IGNORE INTO seen(message_id, acked_ms) VALUES (?, ?)", (message_id, _now()))
        self._db.execute("DELETE FROM inbox WHERE message_id = ?", (message_id,))
        self._superseded()  # the acknowledged plaintext

    # -- sent plaintexts kept for a peer's retry request (``_healing``) --
    def add_resendable(self, message_id: bytes, recipient_device: str, recipient_account: str, payload: bytes) -> None:
        at = _resendable_at(message_id, recipient_device, recipient_account)
        self._db.execute(
            "INSERT OR REPLACE INTO resendable(message_id, recipient_device, recipient_account, payload, created_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (message_id, recipient_device, recipient_account, self._fields.seal(at, payload), _now()),
        )

    def take_resendable(self, recipient_device: str, recipient_account: str, message_ids: Iterable[bytes]) -> list[bytes]:
        """The payloads sent to exactly this device of this account under these ids, deleted as they are read."""
        found = []
        for message_id in message_ids:
            row = self._db.execute(
                "SELECT payload FROM resendable WHERE message_id = ? AND recipient_device = ? AND recipient_account = ?",
                (message_id, recipient_device, recipient_account),
            ).fetchone()
            if row is None:
                continue
            at = _resendable_at(message_id, recipient_device, recipient_account)
            found.append(self._fields.open(at, bytes(row[0])))
            self._db.execute(
                "DELETE FROM resendable WHERE message_id = ? AND recipient_device = ?", (message_id, recipient_device)
            )
        if found:
            self._superseded()
        return found

    def prune_resendable(self, *, older_than_ms: int, keep: int) -> None:
        """Deletes sent plaintexts created before ``older_than_ms``, and all but the newest ``keep``."""
        cursor = self._db.execute("DELETE FROM resendable WHERE created_ms < ?", (older_than_ms,))
        deleted = cursor.rowcount
        # Rowids grow with every insert: all but the last ``keep`` inserted (fewer rows when
        # some were deleted since), found through the rowid b-tree instead of a scan.
        cursor = self._db.execute(
            "DELETE FROM resendable WHERE rowid <= (SELECT max(rowid) FROM resendable) - ?", (keep,)
        )
        if deleted + cursor.rowcount > 0:
            self._superseded()

    # -- acknowledgements the server has not confirmed yet --------------
    # Mailbox sequences are protobuf uint64; SQLite integers are signed 64-bit.
    # Stored as two's complement, so any sequence a server sends fits (one
    # >= 2**63 raised OverflowError out of the receive loop, on every reconnect).
    def add_pending_acks(self, sequences: Iterable[int]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO pending_acks(sequence) VALUES (?)", [(_signed64(s),) for s in sequences])

    def pending_acks(self) -> list[int]:
        return sorted(int(r[0]) % _U64 for r in self._db.execute("SELECT sequence FROM pending_acks"))

    def remove_pending_acks(self, sequences: Iterable[int]) -> None:
        self._db.executemany("DELETE FROM pending_acks WHERE sequence = ?", [(_signed64(s),) for s in sequences])


_U64 = 2**64


def _add_outbox_ttl(db: sqlite3.Connection) -> None:
    """State files from before disappearing messages: the outbox gains its TTL column (0 = none)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
    if "ttl_s" not in columns:
        db.execute("ALTER TABLE outbox ADD COLUMN ttl_s INTEGER NOT NULL DEFAULT 0")


def _session_at(peer_device: str, peer_account: str) -> str:
    return location("session", peer_device, peer_account)


def _resendable_at(message_id: bytes, recipient_device: str, recipient_account: str) -> str:
    return location("resendable", message_id.hex(), recipient_device, recipient_account)


def _inbox_at(message_id: bytes, sender_account: str, sender_device: str) -> str:
    return location("inbox", message_id.hex(), sender_account, sender_device)


def _outbox_at(message_id: bytes, recipient_device: str, recipient_account: str) -> str:
    return location("outbox", message_id.hex(), recipient_device, recipient_account)


def _signed64(sequence: int) -> int:
    """A uint64 sequence as the signed 64-bit integer SQLite stores (inverse: ``% 2**64``)."""
    if not 0 <= sequence < _U64:
        raise ValueError(f"mailbox sequence {sequence} is not a uint64")
    return sequence - _U64 if sequence >= 2**63 else sequence

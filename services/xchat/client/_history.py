"""Opt-in local history and its encrypted export (issue 14, account lifecycle).

The SDK keeps no plaintext once a message is acknowledged: the inbox row goes
with the ack, and what it sent only stays until every device holds it. So a
history to export must be asked for: ``Client.keep_history(True)`` (a sealed
meta row, so it survives restarts) makes this device keep, from then on, each
message it sends one-to-one and each message the app acknowledges, in the
``history`` table, sealed under the state key like the inbox. Kept: at most
``MAX_HISTORY_ROWS`` (the oldest go first). Never kept: messages of a
disappearing conversation (they must go when their timer says so) and the
SDK's own control messages. ``keep_history(False)`` stops keeping and deletes
what was kept.

Export file (``export``), one AEAD blob, nothing readable without the secret::

    magic "XCHATHX1" (8) | kdf (1: 1 scrypt, 0 raw key) | log2 n (1) | r (1) | p (1)
    | salt (16) | nonce (12) | AES-256-GCM(key, nonce, JSON entries, aad = the header)

The key is scrypt(passphrase, salt, n=2^15, r=8, p=1) (~32 MiB and ~0.1 s:
slow to guess, quick for one export) or a caller's own 32-byte key.
``read_export`` checks it all and raises ``HistoryExportError`` for a wrong
secret, a truncated or edited file, or another format.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from xchat.client._atrest import location
from xchat.client._state import LocalState
from xchat.client.errors import HistoryExportError
from xchat.client.messages import Message

MAX_HISTORY_ROWS = 50_000
#: An export larger than this is refused when read (the writer cannot exceed it: bounded rows and bodies).
MAX_EXPORT_BYTES = 1 << 30
MAGIC = b"XCHATHX1"
KDF_RAW, KDF_SCRYPT = 0, 1
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 15, 8, 1
SALT_BYTES, NONCE_BYTES, KEY_BYTES = 16, 12, 32
HEADER_BYTES = len(MAGIC) + 4 + SALT_BYTES + NONCE_BYTES
META_KEEP = "history.keep"
SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id BLOB NOT NULL, direction TEXT NOT NULL,
    peer TEXT NOT NULL, record BLOB NOT NULL, UNIQUE (message_id, direction));
"""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One message of an exported history. ``direction``: "sent" or "received"; ``peer``: the
    other account (or the group id for a group message); ``at_ms``: its sender's clock."""

    message_id: bytes
    direction: str
    peer: str
    sender_account: str
    sender_device: str
    sent_at_ms: int
    content_type: str
    body: bytes
    group_id: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.message_id.hex(), "dir": self.direction, "peer": self.peer, "from": self.sender_account,
            "from_device": self.sender_device, "at": self.sent_at_ms, "type": self.content_type,
            "body": base64.b64encode(self.body).decode(), "group": self.group_id,
        }

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> HistoryEntry:
        return cls(
            bytes.fromhex(str(raw["id"])), str(raw["dir"]), str(raw["peer"]), str(raw["from"]), str(raw["from_device"]),
            int(str(raw["at"])), str(raw["type"]), base64.b64decode(str(raw["body"])),
            None if raw.get("group") is None else str(raw["group"]),
        )


class History:
    def __init__(self, state: LocalState) -> None:
        self._state = state
        state.db.executescript(SCHEMA)

    @property
    def keeping(self) -> bool:
        return self._state.get_meta(META_KEEP) == b"1"

    def keep(self, enabled: bool) -> None:
        with self._state.transaction():
            if enabled:
                self._state.set_meta(META_KEEP, b"1")
            else:
                self._state.delete_meta(META_KEEP)
                self._state.db.execute("DELETE FROM history")
        if not enabled:
            self._state.scrub_after_commit()  # the deleted plaintext leaves the WAL too

    def add(self, entry: HistoryEntry | None) -> None:
        """Keeps ``entry`` if keeping is on (idempotent per message and direction)."""
        if entry is None or not self.keeping:
            return
        at = location("history", entry.message_id.hex(), entry.direction)
        sealed = self._state.seal_field(at, json.dumps(entry.to_json()).encode())
        with self._state.savepoint() if self._state.in_transaction else self._state.transaction(durable=False):
            self._insert(entry.message_id, entry.direction, entry.peer, sealed)

    def _insert(self, message_id: bytes, direction: str, peer: str, sealed: bytes) -> None:
        db = self._state.db
        db.execute(
            "INSERT OR IGNORE INTO history (message_id, direction, peer, record) VALUES (?, ?, ?, ?)",
            (message_id, direction, peer, sealed),
        )
        db.execute("DELETE FROM history WHERE seq <= (SELECT MAX(seq) FROM history) - ?", (MAX_HISTORY_ROWS,))

    def entries(self) -> list[HistoryEntry]:
        rows = self._state.db.execute("SELECT message_id, direction, record FROM history ORDER BY seq").fetchall()
        return [
            HistoryEntry.from_json(json.loads(self._state.open_field(location("history", bytes(m).hex(), d), bytes(r))))
            for m, d, r in rows
        ]

    async def export(self, path: Path, *, passphrase: str | None, key: bytes | None) -> int:
        """Writes every kept entry to ``path`` (atomically: a temporary file renamed); returns how many."""
        entries = self.entries()  # on the loop's thread: the state's SQLite connection is bound to it
        data = json.dumps({"v": 1, "exported_at_ms": int(time.time() * 1000), "entries": [e.to_json() for e in entries]})
        # scrypt (0.1-0.7 s measured, 32 MiB) and the fsync off the event loop.
        await asyncio.to_thread(_seal_and_write, path, data.encode(), passphrase, key)
        return len(entries)


def _seal_and_write(path: Path, data: bytes, passphrase: str | None, key: bytes | None) -> None:
    _write_atomic(path, seal_export(data, passphrase=passphrase, key=key))


def _write_atomic(path: Path, blob: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "wb") as out:
            out.write(blob)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _derive(kdf: int, salt: bytes, passphrase: str | None, key: bytes | None, n_log2: int, r: int, p: int) -> bytes:
    if (passphrase is None) == (key is None):
        raise ValueError("give exactly one of passphrase= or key=")
    if key is not None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"key must be {KEY_BYTES} bytes")
        if kdf != KDF_RAW:
            raise HistoryExportError("this export was sealed with a passphrase, not a key")
        return key
    assert passphrase is not None
    if kdf != KDF_SCRYPT:
        raise HistoryExportError("this export was sealed with a key, not a passphrase")
    if not passphrase:
        raise ValueError("the passphrase must not be empty")
    if not (10 <= n_log2 <= 20 and 1 <= r <= 16 and 1 <= p <= 4):
        raise HistoryExportError("the export's key-derivation parameters are out of bounds")
    return Scrypt(salt=salt, length=KEY_BYTES, n=1 << n_log2, r=r, p=p).derive(passphrase.encode())


def seal_export(data: bytes, *, passphrase: str | None, key: bytes | None) -> bytes:
    kdf = KDF_RAW if key is not None else KDF_SCRYPT
    salt, nonce = secrets.token_bytes(SALT_BYTES), secrets.token_bytes(NONCE_BYTES)
    header = MAGIC + bytes([kdf, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P]) + salt + nonce
    secret = _derive(kdf, salt, passphrase, key, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    return header + AESGCM(secret).encrypt(nonce, data, header)


def read_export(path: Path | str, *, passphrase: str | None = None, key: bytes | None = None) -> list[HistoryEntry]:
    """The entries of an export written by ``Client.export_history``.

    Raises ``HistoryExportError`` for a wrong passphrase or key, or a file that is
    not an intact export; ``ValueError`` for neither or both of passphrase and key.
    """
    path = Path(path)
    if path.stat().st_size > MAX_EXPORT_BYTES:
        raise HistoryExportError(f"{path} is larger than an export can be ({MAX_EXPORT_BYTES} bytes)")
    blob = path.read_bytes()
    if len(blob) < HEADER_BYTES + 16 or not blob.startswith(MAGIC):
        raise HistoryExportError(f"{path} is not an xchat history export")
    header = blob[:HEADER_BYTES]
    kdf, n_log2, r, p = header[len(MAGIC) : len(MAGIC) + 4]
    salt = header[len(MAGIC) + 4 : len(MAGIC) + 4 + SALT_BYTES]
    nonce = header[-NONCE_BYTES:]
    secret = _derive(kdf, salt, passphrase, key, n_log2, r, p)
    try:
        data = AESGCM(secret).decrypt(nonce, blob[HEADER_BYTES:], header)
    except InvalidTag as exc:
        raise HistoryExportError("wrong passphrase or key, or the export was altered") from exc
    return [HistoryEntry.from_json(raw) for raw in json.loads(data)["entries"]]


def sent_entry(
    message_id: bytes, me: tuple[str, str], peer: str, content_type: str, body: bytes, *, ttl_s: int
) -> HistoryEntry | None:
    """What ``Client.send`` keeps (None: a disappearing conversation's message, never kept)."""
    if ttl_s:
        return None
    return HistoryEntry(message_id, "sent", peer, me[0], me[1], int(time.time() * 1000), content_type, body)


def received_entry(message: Message) -> HistoryEntry | None:
    """What ``Client.ack`` keeps: a message the app processed (None: it disappears, never kept)."""
    if message.expires_at_ms is not None:
        return None
    direction = "sent" if message.sent_to is not None else "received"  # our other device's send (sent-message sync)
    peer = message.group_id or message.sent_to or message.sender_account
    return HistoryEntry(
        message.message_id, direction, peer, message.sender_account, message.sender_device, message.sent_at_ms,
        message.content_type, message.body, message.group_id,
    )

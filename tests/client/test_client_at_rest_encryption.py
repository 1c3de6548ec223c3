"""Keys at rest: ``Client.open(..., state_key=)`` seals every secret the state file holds.

Through the SDK on the real mesh: with a key, neither the identity seed, the
prekey private keys, the ratchet keys, the profile key, the refresh token nor
an unacknowledged plaintext can be found in the database files, and the
client carries on after a restart with the same key. A wrong or missing key
raises ``StateKeyError`` and leaves the files byte for byte as they were; a
row moved to another row's place (a hostile edit of the file) fails
authentication instead of being believed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import sqlite3
from pathlib import Path

import pytest

from xchat.client import Client, Message, StateKeyError
from xchat.client._state import LocalState
from xchat.client.crypto import IdentityKeyPair, PrekeyStore, Session
from xchat.client.crypto.sessions import SessionRecord
from xchat.mesh.local import LocalMesh


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _next(messages, timeout: float = 15.0) -> Message:  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(anext(messages), timeout)


def _files(db: Path) -> list[Path]:
    return [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")) if p.exists()]


def _raw(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in _files(db))


def _digest(db: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(db)}


def _found(value: bytes, raw: bytes) -> bool:
    """``value`` or any 16-byte piece of it (a value may straddle a page boundary)."""
    return value in raw or any(value[i : i + 16] in raw for i in range(0, len(value) - 15, 16))


def _ratchet_keys(session: Session) -> set[bytes]:
    """Root, chain and skipped message keys of a session (test-only look inside)."""
    state = session._state  # noqa: SLF001
    keys = {state.rk, *(mk for mk, _derived_ms in state.skipped.values())}
    keys |= {k for k in (state.cks, state.ckr) if k is not None}
    return keys


def _secrets_of(db: Path, key: bytes) -> dict[str, bytes]:
    """Every secret value the state holds, read back through the key (a closed client's file)."""
    state = LocalState(db, state_key=key)
    try:
        found: dict[str, bytes] = {}
        identity_blob = state.get_meta("identity")
        assert identity_blob is not None
        identity = IdentityKeyPair.from_bytes(identity_blob)
        found["identity seed"] = identity_blob[1:33]
        prekeys_blob = state.get_meta("prekeys")
        assert prekeys_blob is not None
        store = PrekeyStore.from_bytes(prekeys_blob, identity)
        for key_id, private in store._one_time.items():  # noqa: SLF001
            found[f"one-time prekey {key_id}"] = private
        for key_id, entry in store._signed.items():  # noqa: SLF001
            found[f"signed prekey {key_id}"] = entry.private
        for key_id, pq in store._pq.items():  # noqa: SLF001
            found[f"pq prekey seed {key_id}"] = pq.seed
        for name in ("profile_key", "refresh_token"):
            value = state.get_meta(name)
            assert value is not None, name
            found[name] = value
        for (device,) in state._db.execute("SELECT peer_device FROM sessions").fetchall():  # noqa: SLF001
            blob = state.session(device)
            assert blob is not None
            record = SessionRecord.from_bytes(blob)
            sessions = [record.current, *(record.archived(i) for i in range(record.archived_count))]
            for i, ratchet_key in enumerate(set().union(*(_ratchet_keys(s) for s in sessions))):
                found[f"ratchet key {i} with {device}"] = ratchet_key
        return found
    finally:
        state.close()


async def test_with_a_state_key_no_secret_is_in_the_files_and_the_client_carries_on(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    key_a, key_b = os.urandom(32), os.urandom(32)
    alice_db, bob_db = tmp_path / "alice.db", tmp_path / "bob.db"
    alice_name, bob_name = _name("alice"), _name("bob")
    marker = f"unacked-marker-{secrets.token_hex(8)}"
    async with await Client.open(alice_db, mesh.endpoints("a"), state_key=key_a) as alice, await Client.open(
        bob_db, mesh.endpoints("b"), state_key=key_b
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        inbox = bob.messages()
        await alice.send(bob_name, "first")
        await bob.ack(await _next(inbox))
        await bob.send(alice_name, "reply")  # bob's ratchet steps, alice gets a profile key
        alice_inbox = alice.messages()
        await alice.ack(await _next(alice_inbox))
        await alice.send(bob_name, marker)
        held = await _next(inbox)  # in bob's inbox table, not acknowledged
        assert held.text == marker
        await inbox.aclose()
        await alice_inbox.aclose()
        number = alice.safety_number(bob_name)

    for db, key in ((alice_db, key_a), (bob_db, key_b)):
        found = _secrets_of(db, key)
        assert any(name.startswith("ratchet key") for name in found)
        raw = _raw(db)
        leaked = [name for name, value in found.items() if _found(value, raw)]
        assert not leaked, f"{db.name}: in clear in the state files: {leaked}"
    assert marker.encode() not in _raw(bob_db)

    # Same keys: the sessions go on (no new PREKEY exchange) and nothing is lost.
    async with await Client.open(alice_db, mesh.endpoints("a"), state_key=key_a) as alice, await Client.open(
        bob_db, mesh.endpoints("c"), state_key=key_b
    ) as bob:
        assert alice.account == alice_name and alice.safety_number(bob_name) == number
        inbox = bob.messages()
        again = await _next(inbox)
        assert again.text == marker  # redelivered from the (sealed) inbox
        await bob.ack(again)
        await alice.send(bob_name, "after restart")
        assert (await _next(inbox)).text == "after restart"
        await inbox.aclose()


async def test_a_wrong_or_missing_key_is_refused_and_changes_nothing(mesh: LocalMesh, tmp_path: Path) -> None:
    db = tmp_path / "carol.db"
    key = os.urandom(32)
    async with await Client.open(db, mesh.endpoints("a"), state_key=key) as carol:
        await carol.register(_name("carol"))
    before = _digest(db)
    with pytest.raises(StateKeyError, match="another state_key"):
        await Client.open(db, mesh.endpoints("a"), state_key=os.urandom(32))
    with pytest.raises(StateKeyError, match="pass its state_key"):
        await Client.open(db, mesh.endpoints("a"))
    assert _digest(db) == before
    with pytest.raises(ValueError, match="32 random bytes"):
        await Client.open(db, mesh.endpoints("a"), state_key=b"short")
    async with await Client.open(db, mesh.endpoints("a"), state_key=key) as carol:
        assert carol.device_id  # still opens with the right key


async def test_a_plain_state_file_is_encrypted_in_place_when_a_key_is_given(mesh: LocalMesh, tmp_path: Path) -> None:
    db = tmp_path / "dave.db"
    async with await Client.open(db, mesh.endpoints("b")) as dave:
        await dave.register(_name("dave"))
    plain = LocalState(db)
    blob = plain.get_meta("identity")
    plain.close()
    assert blob is not None
    seed = blob[1:33]
    assert seed in _raw(db)  # today's behaviour without a key
    key = os.urandom(32)
    async with await Client.open(db, mesh.endpoints("b"), state_key=key) as dave:
        assert dave.device_id
        assert seed not in _raw(db)
    assert seed not in _raw(db)
    assert _secrets_of(db, key)["identity seed"] == seed


def test_a_row_moved_into_another_rows_place_fails_authentication(tmp_path: Path) -> None:
    """A hostile edit of the file: one peer's session filed under another device or account."""
    db = tmp_path / "s.db"
    key = os.urandom(32)
    state = LocalState(db, state_key=key)
    state.put_session("aa" * 16, "mallory", b"mallory's session")
    state.put_session("bb" * 16, "bob", b"bob's session")
    raw = sqlite3.connect(db)
    mallory_blob = raw.execute("SELECT state FROM sessions WHERE peer_device = ?", ("aa" * 16,)).fetchone()[0]
    raw.execute("UPDATE sessions SET state = ? WHERE peer_device = ?", (mallory_blob, "bb" * 16))
    raw.execute("UPDATE sessions SET peer_account = 'bob' WHERE peer_device = ?", ("aa" * 16,))
    raw.commit()
    raw.close()
    with pytest.raises(StateKeyError, match="failed authentication"):
        state.session("bb" * 16)
    with pytest.raises(StateKeyError, match="failed authentication"):
        state.session("aa" * 16)
    state.close()

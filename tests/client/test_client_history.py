"""Local history export through the public SDK on the real three-region mesh (issue 14).

History is opt-in (``keep_history``): the SDK keeps no plaintext after an ack
otherwise. The export is one AEAD blob under scrypt(passphrase) or a raw key.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from xchat.client import HistoryExportError, read_history_export

Peer = Any  # tests/client/conftest.py's Peer
Peers = Callable[..., Awaitable[Peer]]


async def test_export_round_trip_and_wrong_secrets(peers: Peers, tmp_path: Path) -> None:
    alice, bob = await peers("a"), await peers("b")
    await alice.client.send(bob.account, "before keeping")  # not kept: history is opt-in
    await bob.message("before keeping")
    alice.client.keep_history()
    sent = (await alice.client.send(bob.account, "hello bob"))[0].message_id
    await bob.message("hello bob")
    await bob.client.send(alice.account, "hello alice")
    received = await alice.message("hello alice")  # acked by the Peer reader: kept then

    export = tmp_path / "alice-history.xhx"
    assert await alice.client.export_history(export, passphrase="correct horse") == 2  # the reader acked both
    entries = read_history_export(export, passphrase="correct horse")
    assert [(e.direction, e.peer, e.body) for e in entries] == [
        ("sent", bob.account, b"hello bob"), ("received", bob.account, b"hello alice")
    ]
    assert (entries[0].message_id, entries[1].message_id) == (sent, received.message_id)
    assert entries[1].sender_device == bob.client.device_id
    assert b"hello" not in export.read_bytes()  # ciphertext only

    with pytest.raises(HistoryExportError, match="wrong passphrase"):
        read_history_export(export, passphrase="wrong horse")
    with pytest.raises(HistoryExportError, match="passphrase, not a key"):
        read_history_export(export, key=secrets.token_bytes(32))
    tampered = tmp_path / "tampered.xhx"
    blob = bytearray(export.read_bytes())
    blob[-1] ^= 1
    tampered.write_bytes(bytes(blob))
    with pytest.raises(HistoryExportError):
        read_history_export(tampered, passphrase="correct horse")
    not_export = tmp_path / "other.bin"
    not_export.write_bytes(b"hello" * 20)
    with pytest.raises(HistoryExportError, match="not an xchat history export"):
        read_history_export(not_export, passphrase="correct horse")

    # A raw key instead of a passphrase; a wrong key is refused the same way.
    key = secrets.token_bytes(32)
    assert await alice.client.export_history(tmp_path / "k.xhx", key=key) == 2
    assert [e.body for e in read_history_export(tmp_path / "k.xhx", key=key)] == [b"hello bob", b"hello alice"]
    with pytest.raises(HistoryExportError, match="wrong passphrase or key"):
        read_history_export(tmp_path / "k.xhx", key=secrets.token_bytes(32))

    # Stopping deletes what was kept.
    alice.client.keep_history(False)
    assert await alice.client.export_history(tmp_path / "empty.xhx", passphrase="x") == 0


async def test_disappearing_messages_are_never_kept(peers: Peers, tmp_path: Path) -> None:
    alice, bob = await peers("a"), await peers("c")
    alice.client.keep_history()
    await alice.client.send(bob.account, "kept")
    await bob.message("kept")
    await alice.client.set_disappearing(bob.account, 3600)
    await alice.client.send(bob.account, "gone later")
    await bob.message("gone later")
    assert await alice.client.export_history(tmp_path / "h.xhx", passphrase="p") == 1
    assert [e.body for e in read_history_export(tmp_path / "h.xhx", passphrase="p")] == [b"kept"]

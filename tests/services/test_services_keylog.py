"""The key transparency log's sealing logic in memory (docs/adr/0014): a fake JetStream with the
two behaviours the log relies on (compare-and-set on a subject's last sequence, Nats-Msg-Id
de-duplication) lets replicas race deterministically. The same flows on a real mesh:
tests/client/test_client_kt_*.py."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

import nacl.signing
import nats.js.errors

from xchat.auth.keylog import KeyLog
from xchat.client.crypto.merkle import log_root, verify_consistency, verify_inclusion


@dataclass
class _Msg:
    seq: int
    subject: str
    data: bytes


class FakeJetStream:
    def __init__(self) -> None:
        self.messages: list[_Msg] = []
        self._ids: set[str] = set()

    async def publish(self, subject: str, payload: bytes, *, stream: str, headers: dict[str, str] | None = None) -> None:
        await asyncio.sleep(0)  # a round trip: the other replica runs meanwhile
        headers = headers or {}
        expected = headers.get("Nats-Expected-Last-Subject-Sequence")
        if expected is not None:
            last = max((m.seq for m in self.messages if m.subject == subject), default=0)
            if last != int(expected):
                raise nats.js.errors.APIError(code=400, err_code=10071, description="wrong last sequence")
        msg_id = headers.get("Nats-Msg-Id")
        if msg_id in self._ids:
            return
        if msg_id:
            self._ids.add(msg_id)
        self.messages.append(_Msg(len(self.messages) + 1, subject, payload))

    async def get_msg(self, stream: str, *, seq: int, subject: str, next: bool, direct: bool) -> _Msg:
        for m in self.messages:
            if m.seq >= seq:
                return m
        raise nats.js.errors.NotFoundError


def _log(js: FakeJetStream, key: nacl.signing.SigningKey, now: float) -> KeyLog:
    return KeyLog(js, key, interval_s=0.0, clock=lambda: now)  # type: ignore[arg-type]


async def _entry(log: KeyLog, account: str, version: int) -> None:
    await log.append(account, hashlib.sha256(account.encode()).digest(), version, b"list %d" % version, b"s" * 64)


async def test_a_replica_that_loses_the_seal_keeps_proving_the_winners_log() -> None:
    js, key = FakeJetStream(), nacl.signing.SigningKey.generate()
    a, b = _log(js, key, 1000.0), _log(js, key, 2000.0)  # different clocks: different candidate heads
    await _entry(a, "alice", 1)  # epoch 0
    await b.maybe_seal()
    await js.publish("xchat.kt.entry", b'{"v":1,"account":"bob","account_key":"' + b"A" * 44 + b'","version":1,"body":"","signature":""}', stream="XCHAT_KT")
    await asyncio.gather(a.maybe_seal(), b.maybe_seal())  # both seal epoch 1: one wins the compare-and-set
    for n in range(2, 6):
        await _entry(a, f"user{n}", 1)  # epochs 2..5, sealed by a
    heads = [h for _, h in a._head_log]
    assert [h.epoch for h in heads] == list(range(6)), "one head per epoch, in order"
    for known in range(5):
        found = await b.lookup("alice", known)  # b answers (it lost epoch 1)
        verify_consistency(known + 1, found.head.log_size, heads[known].log_root, found.head.log_root, found.consistency)
        verify_inclusion(found.head.epoch, found.head.log_size, found.head.leaf_hash(), found.head_inclusion, found.head.log_root)
    assert log_root(b._leaf_hashes) == heads[-1].log_root


async def test_a_retried_append_is_one_entry_and_a_quiet_log_seals_nothing() -> None:
    js, key = FakeJetStream(), nacl.signing.SigningKey.generate()
    a = _log(js, key, 1000.0)
    for _ in range(3):
        await _entry(a, "alice", 1)
    await a.maybe_seal()
    await a.maybe_seal()
    assert [m.subject for m in js.messages] == ["xchat.kt.entry", "xchat.kt.epoch"]
    found: Any = await a.lookup("alice", None)
    assert found.leaf.version == 1 and found.head.epoch == 0


async def test_heads_sealed_before_a_token_key_rotation_keep_naming_their_key() -> None:
    """A rotation (``KeyLog.replace_signing_key``, from the key-file watcher) seals later epochs with the
    new key; the latest head of a quiet log is still the old key's, and a restarted auth that knows the
    old key only from its retired list (``XCHAT_TOKEN_RETIRED_PUBLIC_KEYS_FILE``) still names it."""
    js, old, new = FakeJetStream(), nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    log = _log(js, old, 1000.0)
    await _entry(log, "alice", 1)  # epoch 0, sealed with the old key
    log.replace_signing_key(new, (bytes(old.verify_key),))
    found = await log.lookup("alice", None)
    assert found.directory_key == bytes(old.verify_key)
    found.head.verify(found.directory_key)
    await _entry(log, "bob", 1)  # epoch 1, sealed with the new key
    found = await log.lookup("bob", 0)
    assert found.directory_key == bytes(new.verify_key)
    found.head.verify(found.directory_key)
    restarted = KeyLog(js, new, interval_s=0.0, clock=lambda: 1000.0, known_keys=(bytes(old.verify_key),))  # type: ignore[arg-type]
    heads, _, keys = await restarted.audit_page(0, 0, 10)
    for head in heads:
        head.verify(keys[head.key_id])
    assert len(heads) == 2 and set(keys.values()) == {bytes(old.verify_key), bytes(new.verify_key)}

"""The rules of gossip and of required auditors, in memory (no mesh): which (epoch, root) pairs
contradict a view, and which statements cover a head. The meshes' tests: test_client_kt_attacks.py
(split views), test_client_kt_auditors.py."""

from __future__ import annotations

import asyncio
import json
import os
from types import SimpleNamespace
from typing import Any

import nacl.signing
import pytest

from xchat.client._auditors import AuditProblem, RequiredAuditors, ServedStatement
from xchat.client._gossip import GOSSIP_EXTENSION, Gossip, encode_head
from xchat.client.crypto import Payload
from xchat.client.crypto.auditing import sign_statement
from xchat.client.crypto.merkle import consistency_proof, log_leaf_hash, log_root
from xchat.client.crypto.transparency import EpochHead
from xchat.client.messages import KeyTransparencyAlarm

DIRECTORY = nacl.signing.SigningKey.generate()
NOW_S = 1_700_000_000.0


def _log(size: int) -> tuple[list[EpochHead], list[bytes]]:
    """``size`` signed heads of one log, and its leaves."""
    heads: list[EpochHead] = []
    leaves: list[bytes] = []
    for epoch in range(size):
        head = EpochHead(epoch, os.urandom(32), epoch * 3, 1000 + epoch)
        leaves.append(log_leaf_hash(head.leaf_data()))
        heads.append(head.signed(log_root(leaves), DIRECTORY))
    return heads, leaves


def _statement(auditor: nacl.signing.SigningKey, head: EpochHead, *, age_s: float = 0.0, **changed: Any) -> bytes:
    fields: dict[str, Any] = {
        "regions": ["a"], "from_epoch": 0, "epoch": head.epoch, "log_root": head.log_root, "map_root": head.map_root,
        "entries": 1, "auditor": auditor, "verified_at_ms": int((NOW_S - age_s) * 1000),
    }
    fields.update(changed)
    return json.dumps(sign_statement(**fields)).encode()


def _served(raw: bytes, leaves: list[bytes], first: int, second: int) -> ServedStatement:
    lo, hi = sorted((first, second))
    proof = tuple(consistency_proof(lo + 1, leaves[: hi + 1])) if lo != hi else ()
    return ServedStatement(raw, proof)


def _problem(rules: RequiredAuditors, head: EpochHead, served: list[ServedStatement]) -> str:
    with pytest.raises(AuditProblem) as err:
        rules.check(head, served)
    return err.value.problem


def test_a_head_is_covered_by_its_own_epoch_a_later_one_or_a_recent_earlier_one() -> None:
    heads, leaves = _log(9)
    auditor = nacl.signing.SigningKey.generate()
    rules = RequiredAuditors([bytes(auditor.verify_key)], max_lag_s=600, clock=lambda: NOW_S)
    head = heads[5]
    rules.check(head, [_served(_statement(auditor, head), leaves, 5, 5)])
    rules.check(head, [_served(_statement(auditor, heads[8]), leaves, 5, 8)])
    rules.check(head, [_served(_statement(auditor, heads[2], age_s=599), leaves, 2, 5)])
    # Earlier and older than the lag: the head waits for the next audit.
    assert _problem(rules, head, [_served(_statement(auditor, heads[2], age_s=601), leaves, 2, 5)]) == "unaudited"
    assert _problem(rules, head, []) == "unaudited"
    RequiredAuditors().check(head, [])  # nothing required: every head


def test_forged_foreign_and_mismatched_statements() -> None:
    heads, leaves = _log(6)
    auditor, rogue = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    rules = RequiredAuditors([bytes(auditor.verify_key)], clock=lambda: NOW_S)
    head = heads[4]
    forged = _statement(rogue, head).replace(bytes(rogue.verify_key).hex().encode(), bytes(auditor.verify_key).hex().encode())
    assert _problem(rules, head, [_served(forged, leaves, 4, 4)]) == "audit_signature"
    foreign = _served(_statement(rogue, head), leaves, 4, 4)
    assert _problem(rules, head, [foreign]) == "unaudited"
    rules.check(head, [foreign, _served(_statement(auditor, head), leaves, 4, 4)])  # another auditor's is ignored
    other_root = _statement(auditor, head, log_root=os.urandom(32))
    assert _problem(rules, head, [_served(other_root, leaves, 4, 4)]) == "audit_mismatch"
    earlier_other = _statement(auditor, heads[2], log_root=os.urandom(32))
    assert _problem(rules, head, [_served(earlier_other, leaves, 2, 4)]) == "audit_mismatch"
    assert _problem(rules, head, [ServedStatement(_statement(auditor, heads[2]), ())]) == "audit_mismatch"  # no proof
    with pytest.raises(ValueError):
        RequiredAuditors([b"short"])


def _gossip(view: EpochHead | None) -> tuple[Gossip, list[Any], SimpleNamespace]:
    events: list[Any] = []
    transparency = SimpleNamespace(last_epoch=view)
    return Gossip(transparency, None, on_event=events.append, own_account=lambda: "me"), events, transparency  # type: ignore[arg-type]


def _payload(extensions: tuple[tuple[int, bytes], ...]) -> Payload:
    return Payload.new(b"hi", counter=1, extensions=extensions)


async def test_the_same_epoch_with_another_root_is_a_split_view_at_once() -> None:
    heads, _leaves = _log(3)
    gossip, events, _t = _gossip(heads[2])
    assert gossip.outgoing() == ((GOSSIP_EXTENSION, encode_head(2, heads[2].log_root)),)
    gossip.received("bob", "d1", _payload(()))  # an older SDK: nothing to compare
    gossip.received("bob", "d1", _payload(((GOSSIP_EXTENSION, b"short"),)))  # malformed: ignored
    gossip.received("bob", "d1", _payload(((GOSSIP_EXTENSION, encode_head(2, heads[2].log_root)),)))
    assert events == []
    other = os.urandom(32)
    for _ in range(3):  # one alarm per contradiction
        gossip.received("bob", "d1", _payload(((GOSSIP_EXTENSION, encode_head(2, other)),)))
    assert [(e.account, e.problem) for e in events] == [("bob", "split_view")]
    assert isinstance(events[0], KeyTransparencyAlarm)
    await gossip.close()
    assert _gossip(None)[0].outgoing() == ()


async def test_other_epochs_are_checked_in_the_background_once_each() -> None:
    heads, leaves = _log(6)
    gossip, events, _t = _gossip(heads[5])
    calls: list[tuple[int, int]] = []

    async def prove(first: int, second: int) -> list[bytes]:
        calls.append((first, second))
        return consistency_proof(first + 1, leaves[: second + 1])

    gossip._prove = prove  # type: ignore[method-assign]
    for _ in range(3):
        gossip.received("bob", "d1", _payload(((GOSSIP_EXTENSION, encode_head(2, heads[2].log_root)),)))
    gossip.received("carol", "d2", _payload(((GOSSIP_EXTENSION, encode_head(3, os.urandom(32))),)))
    for _ in range(50):
        if gossip.proven == 1 and events:
            break
        await asyncio.sleep(0.01)
    assert calls == [(2, 5), (3, 5)] and gossip.proven == 1
    assert [(e.account, e.problem) for e in events] == [("carol", "split_view")]
    gossip.received("bob", "d1", _payload(((GOSSIP_EXTENSION, encode_head(2, heads[2].log_root)),)))
    await asyncio.sleep(0.05)
    assert calls == [(2, 5), (3, 5)]  # proven once against this view
    await gossip.close()

"""Auditors' statements, kept for the clients that require one (docs/key-transparency.md).

An auditor (``xchat audit --publish``) hands its signed statement to any
region's auth (``Auth.PublishAuditStatement``, anonymous); auth keeps the
latest statement of each auditor in the ``xchat_kt_audit`` bucket (R3, one
key per auditor: its public key in hex) and serves them with ``LookupKey``
to clients that ask, each with a consistency proof to the lookup's head.

Least privilege: an auditor needs no account, token or NATS credential; its
signing key is its only identity, and that key can do one thing here:
replace its own statement with one for the same or a later epoch. Auth
takes statements only from the keys the deployment lists
(``XCHAT_KT_AUDITOR_KEYS``), checks their signature, and refuses an older
epoch than the stored one (a replayed old statement would make clients
trust less of the log, never more). It does not check that the statement
matches its own log: a statement of another history is exactly what
clients must see (they refuse it, "audit_mismatch").
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from xchat.client.crypto.auditing import AuditStatement, StatementError
from xchat.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from xchat.core.store import translate

log = logging.getLogger(__name__)

# Concurrent publishers of one auditor (two regions at once): compare-and-set tries.
PUBLISH_ATTEMPTS = 3


class AuditStatements:
    def __init__(self, bucket: KeyValue, auditor_keys: tuple[bytes, ...]) -> None:
        self._bucket = bucket
        self._keys = tuple(dict.fromkeys(auditor_keys))

    @property
    def auditors(self) -> tuple[bytes, ...]:
        return self._keys

    async def publish(self, raw: bytes) -> AuditStatement:
        """Stores ``raw`` as its auditor's latest statement (see the module docstring for the checks)."""
        try:
            statement = AuditStatement.parse(raw).verify()
        except StatementError as exc:
            raise InvalidArgument(str(exc)) from exc
        if statement.auditor_key not in self._keys:
            raise PermissionDenied(
                f"auditor key {statement.auditor_key.hex()[:16]} is not one this deployment lists (XCHAT_KT_AUDITOR_KEYS)"
            )
        key = statement.auditor_key.hex()
        try:
            for _ in range(PUBLISH_ATTEMPTS):
                try:
                    entry = await self._bucket.get(key)
                except nats.js.errors.KeyNotFoundError:
                    try:
                        await self._bucket.create(key, raw)
                        return statement
                    except nats.js.errors.KeyWrongLastSequenceError:
                        continue  # another region stored one first: compare with it
                try:
                    stored_epoch = AuditStatement.parse(entry.value or b"").epoch
                except StatementError:
                    stored_epoch = -1  # not a statement (a damaged value): the auditor's word replaces it
                if statement.epoch < stored_epoch:
                    raise FailedPrecondition(
                        f"epoch {statement.epoch} is older than this auditor's stored statement (epoch {stored_epoch})"
                    )
                try:
                    await self._bucket.update(key, raw, last=entry.revision)
                    return statement
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translate(exc) from exc
        raise FailedPrecondition("another statement of this auditor was stored at the same moment: retry")

    async def latest(self) -> list[bytes]:
        """Each listed auditor's latest statement, as published (auditors without one are left out)."""
        out: list[bytes] = []
        for auditor in self._keys:
            try:
                entry = await self._bucket.get(auditor.hex())
            except nats.js.errors.KeyNotFoundError:
                continue
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                raise translate(exc) from exc
            if entry.value:
                out.append(bytes(entry.value))
        return out

"""Key transparency in the SDK (docs/adr/0014): every device list used is checked against the log.

Before a device list the directory serves is trusted (``Devices.fetch``),
the SDK looks the account up in the key transparency log and checks:

- the epoch head is signed by the directory key it names;
- the head is the last leaf of the log tree it signs, and that tree extends
  the one this device verified last (RFC 9162 consistency), remembered in the
  SDK state's ``kt_head`` row across regions and restarts: an older epoch is a
  rollback, another root for a known epoch or a tree that does not extend it
  is a fork (two regions showing two histories to one client);
- the map proof leads to the signed map root, and the leaf is exactly the
  account key and list served (another key or list: the directory shows this
  client something the log does not hold);
- a list newer than the sealed leaf is waited for (the log seals at its
  cadence) and is an alarm when still missing after a few epochs; an older
  one is a stale view.

For its **own account** it also checks that the log holds our account key and
lists signed by it: anything else is a key or device this account did not add.

When the client requires auditors (``_auditors``), every head is also checked
against their statements before it is remembered. The head remembered here is
what this device gossips to the devices it writes to (``_gossip``).

Each failure is a ``KeyTransparencyAlarm`` event and a ``KeyTransparencyError``
(an ``UntrustedDeviceList``, so nothing is sent to or accepted from the
account, exactly as for a list its account key did not sign).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from xchat.client._auditors import AuditProblem, RequiredAuditors, ServedStatement
from xchat.client._state import LocalState
from xchat.client._tokens import Tokens
from xchat.client.crypto.account import DeviceListSignatureError, verify_device_list
from xchat.client.crypto.errors import CryptoError
from xchat.client.crypto.merkle import MapProof, ProofError, map_root_from_proof, verify_consistency, verify_inclusion
from xchat.client.crypto.transparency import EpochHead, HeadSignatureError, leaf_value, map_key
from xchat.client.errors import KeyTransparencyError
from xchat.client.messages import KeyTransparencyAlarm, SecurityEvent
from xchat.statements import DeviceListBody, MalformedDeviceList
from xchat.v1 import auth_pb2, auth_pb2_grpc

HEAD_ROW = "kt_head"
# A list newer than the log's leaf is waited for this many epoch intervals
# (plus SEAL_GRACE_S for a loaded machine) before it is an alarm.
SEAL_EPOCHS = 3
SEAL_GRACE_S = 5.0
POLL_S = 0.2
# A list older than the log's is asked for again this many times (POLL_S apart) before
# "stale": a lagging replica may have answered the first ListDevices.
STALE_RETRIES = 3


@dataclass(frozen=True, slots=True)
class Leaf:
    account_key: bytes
    version: int
    body: bytes
    signature: bytes


class Transparency:
    def __init__(
        self,
        state: LocalState,
        tokens: Tokens,
        *,
        on_event: Callable[[SecurityEvent], None],
        own: Callable[[], tuple[str | None, bytes | None]],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        auditors: RequiredAuditors | None = None,
    ) -> None:
        self._state = state
        self._auditors = auditors if auditors is not None else RequiredAuditors()
        # The remembered head, parsed once (every payload sent gossips it): (loaded, head).
        self._head: tuple[bool, EpochHead | None] = (False, None)
        self._tokens = tokens
        self._on_event = on_event
        self._own = own  # (our account, our account public key)
        self._sleep = sleep
        self._clock = clock
        self._lock = asyncio.Lock()

    def _alarm(self, account: str, problem: str, detail: str) -> KeyTransparencyError:
        self._on_event(KeyTransparencyAlarm(account, problem, detail))
        return KeyTransparencyError(account, problem, detail)

    @property
    def last_epoch(self) -> EpochHead | None:
        """The latest epoch head this device verified (None: none yet)."""
        loaded, head = self._head
        if loaded:
            return head
        raw = self._state.get_meta(HEAD_ROW)
        if raw is not None:
            data = json.loads(raw)
            head = EpochHead(
                int(data["epoch"]), bytes.fromhex(data["map_root"]), int(data["entries_upto"]), int(data["time_ms"]),
                bytes.fromhex(data["log_root"]), str(data["key_id"]), bytes.fromhex(data["signature"]),
            )
        self._head = (True, head)
        return head

    def _remember(self, head: EpochHead) -> None:
        self._state.set_meta(
            HEAD_ROW,
            json.dumps(
                {"epoch": head.epoch, "map_root": head.map_root.hex(), "entries_upto": head.entries_upto,
                 "time_ms": head.time_ms, "log_root": head.log_root.hex(), "key_id": head.key_id,
                 "signature": head.signature.hex()}
            ).encode(),
        )
        self._head = (True, head)

    # -- one lookup, verified -------------------------------------------------------

    async def lookup(self, account: str) -> tuple[Leaf | None, float]:
        """``account``'s leaf in the latest epoch (None: proven absent) and the sealing interval in seconds."""
        async with self._lock:  # one verified head at a time: the remembered head only moves forward
            known = self.last_epoch
            request = auth_pb2.LookupKeyRequest(account=account, audit_statements=self._auditors.required)
            if known is not None:
                request.known_epoch = known.epoch
            reply: auth_pb2.LookupKeyResponse = await self._tokens.authed(
                lambda ch, t, md: auth_pb2_grpc.AuthStub(ch).LookupKey(request, timeout=t, metadata=md), service="auth"
            )
            head = EpochHead(
                reply.head.epoch, bytes(reply.head.map_root), reply.head.entries_upto, reply.head.time_ms,
                bytes(reply.head.log_root), reply.head.key_id, bytes(reply.head.signature),
            )
            self._check_signature(account, head, bytes(reply.directory_key))
            self._check_history(account, known, head, list(reply.consistency_proof))
            try:
                verify_inclusion(head.epoch, head.log_size, head.leaf_hash(), list(reply.head_inclusion_proof), head.log_root)
            except ProofError as exc:
                raise self._alarm(account, "bad_proof", f"epoch {head.epoch} is not the last leaf of its log: {exc}") from exc
            try:
                self._auditors.check(
                    head, [ServedStatement(bytes(a.statement), tuple(a.consistency_proof)) for a in reply.audit_statements]
                )
            except AuditProblem as exc:
                raise self._alarm(account, exc.problem, exc.detail) from exc
            leaf = (
                Leaf(bytes(reply.account_key), reply.version, bytes(reply.device_list.body), bytes(reply.device_list.signature))
                if reply.found
                else None
            )
            proof = MapProof(list(reply.map_siblings), bytes(reply.path_leaf_key), bytes(reply.path_leaf_value))
            try:
                root, value = map_root_from_proof(map_key(account), proof)
            except ProofError as exc:
                raise self._alarm(account, "bad_proof", str(exc)) from exc
            expected = leaf_value(leaf.account_key, leaf.version, leaf.body) if leaf is not None else None
            if root != head.map_root or value != expected:
                raise self._alarm(
                    account, "bad_proof", f"the map proof for {account!r} does not lead to epoch {head.epoch}'s signed root"
                )
            self._remember(head)
            return leaf, reply.epoch_interval_ms / 1000

    def _check_signature(self, account: str, head: EpochHead, directory_key: bytes) -> None:
        """The head is signed by the key it names (its id is that key's hash). No key is pinned:
        a rotated directory key is accepted, because what protects a client is the log's
        consistency with what it saw (checked next), not who signed; the signature makes the
        directory accountable to auditors, who know the deployment's keys."""
        try:
            head.verify(directory_key)
        except HeadSignatureError as exc:
            raise self._alarm(account, "signature", str(exc)) from exc

    def _check_history(self, account: str, known: EpochHead | None, head: EpochHead, proof: list[bytes]) -> None:
        if known is None:
            return
        if head.epoch < known.epoch:
            raise self._alarm(account, "rollback", f"epoch {head.epoch} served after epoch {known.epoch} was verified")
        if head.epoch == known.epoch:
            if (head.log_root, head.map_root) != (known.log_root, known.map_root):
                raise self._alarm(account, "fork", f"two different roots for epoch {head.epoch}")
            return
        try:
            verify_consistency(known.log_size, head.log_size, known.log_root, head.log_root, proof)
        except ProofError as exc:
            raise self._alarm(
                account, "fork", f"epoch {head.epoch}'s log does not extend epoch {known.epoch}'s: {exc}"
            ) from exc

    # -- checking what the directory serves -------------------------------------------

    async def check(self, account: str, account_key: bytes, body: bytes, signature: bytes, *, newer_ok: bool = False) -> None:
        """Returns when the served key and list are what the log holds (waiting for the next
        epochs for a list newer than the log); ``KeyTransparencyError`` and an event otherwise.

        ``newer_ok``: a newer list in the log is fine (monitoring our own account against the
        version pinned here: another of our devices may have published since; it is checked
        to be signed by our account key all the same)."""
        try:
            served_version = DeviceListBody.decode(body).version
        except MalformedDeviceList:
            return  # refused by the device list's own checks (``Devices.trust``)
        deadline: float | None = None
        stale_retries = STALE_RETRIES
        while True:
            leaf, interval_s = await self.lookup(account)
            if leaf is not None and leaf.version > served_version and newer_ok:
                self._check_own(account, leaf)
                return
            if leaf is not None and leaf.version > served_version:
                # A replica behind the log may have answered ListDevices: ask again before the alarm.
                if stale_retries > 0 and await self._served_version(account) == leaf.version:
                    return  # the directory serves the log's list now: the next fetch uses it
                if stale_retries <= 0:
                    raise self._alarm(
                        account, "stale", f"the directory served version {served_version}; the log holds {leaf.version}"
                    )
                stale_retries -= 1
                await self._sleep(POLL_S)
                continue
            if leaf is not None and leaf.version == served_version:
                if (leaf.account_key, leaf.body) != (account_key, body):
                    raise self._alarm(
                        account, "not_in_log", f"the key or device list served for {account!r} is not the one in the log"
                    )
                self._check_own(account, leaf)
                return
            # The log is behind what was served: a list stored since the last epoch, sealed within
            # an interval or two (or the directory keeping it out of the log).
            now = self._clock()
            if deadline is None:
                deadline = now + SEAL_EPOCHS * interval_s + SEAL_GRACE_S
            if now >= deadline:
                held = f"version {leaf.version}" if leaf is not None else "nothing"
                raise self._alarm(
                    account, "missing", f"version {served_version} was served but the log still holds {held}"
                )
            await self._sleep(POLL_S)

    async def _served_version(self, account: str) -> int | None:
        request = auth_pb2.ListDevicesRequest(account=account)
        reply: auth_pb2.ListDevicesResponse = await self._tokens.authed(
            lambda ch, t, md: auth_pb2_grpc.AuthStub(ch).ListDevices(request, timeout=t, metadata=md), service="auth"
        )
        try:
            return DeviceListBody.decode(bytes(reply.device_list.body)).version
        except MalformedDeviceList:
            return None

    async def monitor(self) -> None:
        """Our own account's leaf: our account key, and a list signed by it (checked again on every fetch)."""
        account, key = self._own()
        if account is None or key is None:
            return
        pinned = self._state.get_meta(f"acct_list:{account}")  # the latest list this device verified
        if pinned is None:
            leaf, _interval = await self.lookup(account)
            if leaf is None:
                raise self._alarm(account, "missing", "our own account is not in the log")
            self._check_own(account, leaf)
            return
        await self.check(account, key, pinned, b"", newer_ok=True)

    def _check_own(self, account: str, leaf: Leaf) -> None:
        ours, our_key = self._own()
        if account != ours or our_key is None:
            return
        if leaf.account_key != our_key:
            raise self._alarm(account, "account_key_changed", "the log holds an account key this account did not create")
        try:
            verify_device_list(our_key, account, leaf.body, leaf.signature)
        except (DeviceListSignatureError, CryptoError) as exc:
            digest = hashlib.sha256(leaf.body).hexdigest()[:16]
            raise self._alarm(
                account, "unsigned_change", f"the log holds device list {leaf.version} ({digest}) our account key did not sign"
            ) from exc

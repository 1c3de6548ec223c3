"""The key transparency log in JetStream: entries, sealed epochs, proofs (docs/adr/0014).

One stream, ``XCHAT_KT`` (R3, created by bootstrap with deletes and purges
denied, so no service credential can remove what was appended):

- ``xchat.kt.entry``: one message per stored device list (account, account
  key, version, body, signature), appended by auth right after the list is
  stored in the account record. ``Nats-Msg-Id`` makes a retried append one
  message; applying an entry only when its version is above the account's
  current one makes a duplicate beyond the window a no-op, so each list
  changes the map exactly once.
- ``xchat.kt.epoch``: signed epoch heads. Every auth replica may seal the
  next epoch; the append is a compare-and-set on the subject's last sequence
  (``Nats-Expected-Last-Subject-Sequence``): of concurrent sealers one wins,
  the others read its head and go on from it.

Epochs are sealed at the cadence: every ``interval`` each replica's sealer
task (and any append, lookup or audit read) seals one when entries are
pending and the last epoch is at least ``interval`` old (a quiet directory
seals nothing). Every process replays the
stream into memory (the map at the latest epoch, the heads, the entries)
and answers from there; it keeps reading what other replicas appended.

The serving code trusts what the stream holds (a compromised writer can put
anything there): heads are taken as found, the latest message per epoch
number wins, and proofs are computed from this process's own replay. That is
deliberate: catching a lying directory is the SDK's and the auditor's job,
never the directory's own word.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import json
import logging
import time
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.signing
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from xchat.client.crypto.merkle import MapProof, SparseMerkleTree, consistency_proof, inclusion_proof, log_root
from xchat.client.crypto.transparency import EpochHead, directory_key_id, leaf_value, map_key
from xchat.core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from xchat.core.permissions import KT_ENTRY_SUBJECT, KT_EPOCH_SUBJECT, KT_STREAM, KT_SUBJECTS
from xchat.core.store import translate

log = logging.getLogger(__name__)

# Messages read from the stream per refresh call: bounds one call's work; the
# next call goes on where this one stopped.
REFRESH_BATCH = 20_000
# An audit page: at most this many epochs, and it stops after the epoch that
# brings the page past MAX_AUDIT_ENTRIES entries (a page stays far below gRPC's 4 MB).
MAX_AUDIT_EPOCHS = 1000
MAX_AUDIT_ENTRIES = 2000
ERR_WRONG_LAST_SEQUENCE = 10071


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True, slots=True)
class Entry:
    sequence: int
    account: str
    account_key: bytes
    version: int
    body: bytes
    signature: bytes

    def encode(self) -> bytes:
        return json.dumps(
            {"v": 1, "account": self.account, "account_key": _b64(self.account_key), "version": self.version,
             "body": _b64(self.body), "signature": _b64(self.signature)}
        ).encode()

    @classmethod
    def decode(cls, sequence: int, data: bytes) -> Entry:
        raw = json.loads(data)
        return cls(
            sequence, str(raw["account"]), base64.b64decode(raw["account_key"]), int(raw["version"]),
            base64.b64decode(raw["body"]), base64.b64decode(raw["signature"]),
        )

    def leaf_value(self) -> bytes:
        return leaf_value(self.account_key, self.version, self.body)


def encode_head(head: EpochHead) -> bytes:
    return json.dumps(
        {"epoch": head.epoch, "map_root": _b64(head.map_root), "entries_upto": head.entries_upto,
         "time_ms": head.time_ms, "log_root": _b64(head.log_root), "kid": head.key_id,
         "signature": _b64(head.signature)}
    ).encode()


def decode_head(data: bytes) -> EpochHead:
    raw = json.loads(data)
    return EpochHead(
        int(raw["epoch"]), base64.b64decode(raw["map_root"]), int(raw["entries_upto"]), int(raw["time_ms"]),
        base64.b64decode(raw["log_root"]), str(raw["kid"]), base64.b64decode(raw["signature"]),
    )


@dataclass(frozen=True, slots=True)
class Lookup:
    head: EpochHead
    directory_key: bytes
    leaf: Entry | None
    map_proof: MapProof
    consistency: list[bytes]
    head_inclusion: list[bytes]
    interval_ms: int


@dataclass(slots=True)
class _Replay:
    """The map after entries up to ``upto`` (stream sequence), with the entry behind each leaf."""

    tree: SparseMerkleTree = field(default_factory=SparseMerkleTree)
    leaves: dict[str, Entry] = field(default_factory=dict)
    upto: int = 0

    def apply(self, entry: Entry) -> None:
        current = self.leaves.get(entry.account)
        # Exactly once per list: a duplicate (or an older list) changes nothing.
        if current is None or entry.version > current.version:
            self.leaves[entry.account] = entry
            self.tree.set(map_key(entry.account), entry.leaf_value())
        self.upto = entry.sequence


class KeyLog:
    def __init__(
        self,
        js: JetStreamContext,
        signing_key: nacl.signing.SigningKey,
        *,
        interval_s: float,
        known_keys: tuple[bytes, ...] = (),
        clock: Callable[[], float] = time.time,
        stopped: Callable[[], bool] = lambda: False,
    ) -> None:
        self._stopped = stopped
        self._task: asyncio.Task[None] | None = None
        self._js = js
        self._signing_key = signing_key
        own = bytes(signing_key.verify_key)
        self._keys = {directory_key_id(k): k for k in (*known_keys, own)}
        self._interval_ms = int(interval_s * 1000)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._next_seq = 1
        self._entries: list[Entry] = []
        self._heads: dict[int, EpochHead] = {}  # latest message per epoch number
        self._latest: EpochHead | None = None  # the last head message in the stream
        self._latest_seq = 0  # its stream sequence (the sealers' compare-and-set)
        self._head_log: list[tuple[int, EpochHead]] = []  # every head message, in stream order
        self._replay = _Replay()
        self._log_cache: dict[tuple[int, int], bytes] = {}
        self._leaf_hashes: list[bytes] = []  # log leaf of each epoch (latest head per number)
        self._entry_seqs: list[int] = []  # stream sequence of each entry, ascending (bisect)

    def replace_signing_key(self, signing_key: nacl.signing.SigningKey, known_keys: tuple[bytes, ...] = ()) -> None:
        """Seal later epochs with ``signing_key`` (a token-key rotation, ``xchat.core.tokenkeys``).

        Keys are only ever added to the ones the directory names: heads sealed
        with a retired key keep verifying for clients and auditors.
        """
        for key in (*known_keys, bytes(signing_key.verify_key)):
            self._keys.setdefault(directory_key_id(key), key)
        self._signing_key = signing_key

    # -- the sealer task ------------------------------------------------------

    async def start(self) -> None:
        """Starts the sealer task (``Registration.prepare``); it ends when ``stopped()`` says so."""
        self._task = asyncio.create_task(self._seal_forever(), name="xchat-kt-sealer")

    async def _seal_forever(self) -> None:
        while not self._stopped():
            await asyncio.sleep(self._interval_ms / 1000)
            try:
                await self.maybe_seal()
            except Exception as exc:  # noqa: BLE001 - a store outage: the next tick retries
                log.warning("key transparency: sealing failed (%s); retrying", exc)

    # -- appending ------------------------------------------------------------

    async def append(self, account: str, account_key: bytes, version: int, body: bytes, signature: bytes) -> None:
        """Appends a stored list; a retry of the same list is de-duplicated (then sealed at the cadence)."""
        entry = Entry(0, account, account_key, version, body, signature)
        msg_id = f"kt:{account}:{version}:{hashlib.sha256(body).hexdigest()[:32]}"
        try:
            await self._js.publish(KT_ENTRY_SUBJECT, entry.encode(), stream=KT_STREAM, headers={"Nats-Msg-Id": msg_id})
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translate(exc) from exc
        await self.maybe_seal()

    # -- reading --------------------------------------------------------------

    async def _refresh(self, *, leader: bool = False) -> None:
        """Reads what was appended since the last call. Direct gets may be answered by a lagging
        replica (a prefix of the log: never wrong, possibly old); ``leader``: from the stream
        leader, for a client that already saw a later epoch than we have."""
        for _ in range(REFRESH_BATCH):
            try:
                msg = await self._js.get_msg(
                    KT_STREAM, seq=self._next_seq, subject=KT_SUBJECTS, next=True, direct=not leader
                )
            except nats.js.errors.NotFoundError:
                return
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                raise translate(exc) from exc
            seq = int(msg.seq or 0)
            self._next_seq = seq + 1
            try:
                if msg.subject == KT_ENTRY_SUBJECT:
                    self._entries.append(Entry.decode(seq, msg.data or b""))
                    self._entry_seqs.append(seq)
                elif msg.subject == KT_EPOCH_SUBJECT:
                    head = decode_head(msg.data or b"")
                    if head.epoch < 0:
                        raise ValueError("negative epoch")
                    if head.epoch < len(self._leaf_hashes):
                        # A second head for an epoch (a fork in the store): earlier subtrees change.
                        self._leaf_hashes[head.epoch] = head.leaf_hash()
                        self._log_cache.clear()
                    elif head.epoch == len(self._leaf_hashes):
                        self._leaf_hashes.append(head.leaf_hash())
                    self._heads[head.epoch] = head
                    self._head_log.append((seq, head))
                    self._latest, self._latest_seq = head, seq
            except (ValueError, KeyError, TypeError) as exc:
                log.error("key transparency: unreadable message %d on %s skipped (%s)", seq, msg.subject, exc)

    def _replay_to(self, upto: int) -> _Replay:
        if upto < self._replay.upto:
            self._replay = _Replay()  # a head below what we replayed (a rollback in the store): start over
        start = bisect.bisect_right(self._entry_seqs, self._replay.upto)
        for entry in self._entries[start : bisect.bisect_right(self._entry_seqs, upto)]:
            self._replay.apply(entry)
        self._replay.upto = max(self._replay.upto, upto)
        return self._replay

    def _log_leaves(self, size: int) -> list[bytes]:
        if size > len(self._leaf_hashes):
            raise Unavailable(f"key transparency log lacks epoch {len(self._leaf_hashes)} (store damaged?): retry later")
        return self._leaf_hashes[:size]

    # -- sealing --------------------------------------------------------------

    async def maybe_seal(self) -> None:
        async with self._lock:
            await self._refresh()
            latest = self._latest
            pending = self._entries[-1].sequence if self._entries else 0
            now_ms = int(self._clock() * 1000)
            if latest is not None and (pending <= latest.entries_upto or now_ms - latest.time_ms < self._interval_ms):
                return
            await self._seal(latest, pending, now_ms)

    async def _seal(self, latest: EpochHead | None, upto: int, now_ms: int) -> None:
        if latest is not None:
            replay = self._replay_to(latest.entries_upto)
            if replay.tree.root() != latest.map_root:
                # Never extend a head this replay cannot reproduce: the auditor will name it.
                log.error("key transparency: epoch %d's map root is not the log's replay; not sealing", latest.epoch)
                return
        if any(head.epoch != position for position, (_, head) in enumerate(self._head_log)):
            # A second head for an epoch, or an old one republished: extending it would make the
            # fork or rollback ours too. Stop sealing; clients and auditors raise the alarm.
            log.error("key transparency: the head messages are not consecutive epochs; not sealing")
            return
        epoch = 0 if latest is None else latest.epoch + 1
        replay = self._replay_to(upto)
        head = EpochHead(epoch, replay.tree.root(), upto, now_ms)
        leaves = [*self._log_leaves(epoch), head.leaf_hash()]
        # Our head is only a candidate until the compare-and-set wins: subtrees over it go to a
        # scratch layer, never into the shared cache (another replica's head may take the epoch).
        signed = head.signed(log_root(leaves, ChainMap({}, self._log_cache)), self._signing_key)
        headers = {"Nats-Expected-Last-Subject-Sequence": str(self._latest_seq)}
        try:
            await self._js.publish(KT_EPOCH_SUBJECT, encode_head(signed), stream=KT_STREAM, headers=headers)
        except nats.js.errors.APIError as exc:
            if exc.err_code == ERR_WRONG_LAST_SEQUENCE:
                await self._refresh()  # another replica sealed first: go on from its head
                return
            raise translate(exc) from exc
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise translate(exc) from exc
        await self._refresh()

    # -- answering --------------------------------------------------------------

    async def lookup(self, account: str, known_epoch: int | None) -> Lookup:
        """The latest epoch's head, ``account``'s leaf (or its absence) with its map proof,
        and the log consistency proof from ``known_epoch``."""
        await self.maybe_seal()
        async with self._lock:
            if known_epoch is not None and (self._latest is None or known_epoch > self._latest.epoch):
                await self._refresh(leader=True)  # our replica lags behind what the client saw
            head = self._latest
            if head is None:
                raise Unavailable("no key transparency epoch is sealed yet: retry in a moment")
            replay = self._replay_to(head.entries_upto)
            leaves = self._log_leaves(head.log_size)
            consistency: list[bytes] = []
            if known_epoch is not None and known_epoch < head.epoch:
                consistency = consistency_proof(known_epoch + 1, leaves, self._log_cache)
            return Lookup(
                head=head,
                directory_key=self._keys.get(head.key_id, b""),
                leaf=replay.leaves.get(account),
                map_proof=replay.tree.proof(map_key(account)),
                consistency=consistency,
                head_inclusion=inclusion_proof(head.epoch, leaves, self._log_cache),
                interval_ms=self._interval_ms,
            )

    async def prove(self, first: int, second: int) -> list[bytes]:
        """The RFC 9162 consistency proof from epoch ``first`` to epoch ``second`` of the log as
        this process holds it (gossip between devices, auditors' statements); NotFound when the
        log has no epoch ``second``, even at the stream leader."""
        if not 0 <= first < second:
            raise InvalidArgument("a consistency proof needs 0 <= first_epoch < second_epoch")
        await self.maybe_seal()
        async with self._lock:
            if second >= len(self._leaf_hashes):
                await self._refresh(leader=True)  # our replica lags behind what the other device saw
            if second >= len(self._leaf_hashes):
                raise NotFound(f"the key transparency log has no epoch {second}")
            return consistency_proof(first + 1, self._leaf_hashes[: second + 1], self._log_cache)

    async def audit_page(
        self, from_position: int, after_entry: int, max_epochs: int
    ) -> tuple[list[EpochHead], list[Entry], dict[str, bytes]]:
        """Head messages in stream order from ``from_position`` (the epoch number, in an honest log),
        the entries after sequence ``after_entry`` they need (at most MAX_AUDIT_ENTRIES), and the
        directory keys that signed them. The auditor replays the stream as it is, so a second head
        for an epoch or an old head republished shows up where it was appended."""
        if from_position < 0 or after_entry < 0:
            raise InvalidArgument("from_epoch and after_entry must be >= 0")
        limit = min(max_epochs or MAX_AUDIT_EPOCHS, MAX_AUDIT_EPOCHS)
        await self.maybe_seal()
        async with self._lock:
            heads = [h for _, h in self._head_log[from_position : from_position + limit]]
            needed = max((h.entries_upto for h in heads), default=0)
            start = bisect.bisect_right(self._entry_seqs, after_entry)
            end = min(bisect.bisect_right(self._entry_seqs, needed), start + MAX_AUDIT_ENTRIES)
            entries = self._entries[start:end]
            keys = {h.key_id: self._keys[h.key_id] for h in heads if h.key_id in self._keys}
            return heads, entries, keys

    @property
    def latest_epoch(self) -> int | None:
        return self._latest.epoch if self._latest else None

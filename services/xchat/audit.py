"""``xchat audit``: replay the key transparency log and sign what was verified (docs/adr/0014).

An auditor needs no account (``Auth.AuditLog`` is anonymous) and trusts no
server: it downloads every head message in stream order and the entries
they seal, from one or more regions, and checks

- each head message is the next epoch (a second head for an epoch is a fork,
  an older one republished a rollback) and is signed by the directory key it
  names;
- each head's log root is the RFC 6962 root over epochs 0..n as replayed
  here, so the log only ever grew;
- each head's map root is the map replayed here from the entries up to its
  ``entries_upto`` (a dropped or altered entry shows as another root);
- each entry's device list is signed by the entry's account key, and an
  account's key never changes (ADR 0011: set once);
- across regions: the same root for every epoch two regions both have;
- across runs (``--state``): the log still extends the epoch audited last.

On success it prints a statement over the latest epoch signed by the
auditor's Ed25519 key (a second signature a deployment can ask clients to
require, docs/key-transparency.md) and, with ``--publish``, hands it to the
directory, which serves it to those clients; on a violation, one line and exit 1.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
import nacl.signing

from xchat.client.crypto.account import DeviceListSignatureError, verify_device_list
from xchat.client.crypto.auditing import STATEMENT_LABEL as STATEMENT_LABEL  # for readers of statements
from xchat.client.crypto.auditing import sign_statement
from xchat.client.crypto.errors import CryptoError
from xchat.client.crypto.merkle import SparseMerkleTree, log_leaf_hash, log_root
from xchat.client.crypto.transparency import EpochHead, HeadSignatureError, directory_key_id, leaf_value, map_key
from xchat.v1 import auth_pb2, auth_pb2_grpc

PAGE_EPOCHS = 1000
CALL_TIMEOUT_S = 30.0
# Pages per region: bounds a run against a server that never stops paging.
MAX_PAGES = 100_000


class AuditViolation(Exception):
    """The log is not what an honest directory appends; the message says where."""


class PublishRefused(Exception):
    """The directory refused the statement (``--publish``): the message has its status and reason."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    sequence: int
    account: str
    account_key: bytes
    version: int
    body: bytes
    signature: bytes


@dataclass(slots=True)
class RegionLog:
    region: str
    heads: list[EpochHead] = field(default_factory=list)
    entries: list[LogEntry] = field(default_factory=list)
    keys: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verified:
    region: str
    epoch: int
    log_root: bytes
    map_root: bytes
    entries: int
    roots: tuple[bytes, ...]  # the log root after each epoch


async def fetch(
    region: str, endpoint: str, *, root_certificates: bytes | None = None, page_epochs: int = PAGE_EPOCHS
) -> RegionLog:
    """Every head message and entry of the log as ``endpoint`` serves them."""
    log = RegionLog(region)
    channel = (
        grpc.aio.secure_channel(endpoint, grpc.ssl_channel_credentials(root_certificates))
        if root_certificates is not None
        else grpc.aio.insecure_channel(endpoint)
    )
    async with channel:
        stub = auth_pb2_grpc.AuthStub(channel)
        for _ in range(MAX_PAGES):
            after = log.entries[-1].sequence if log.entries else 0
            request = auth_pb2.AuditLogRequest(from_epoch=len(log.heads), after_entry=after, max_epochs=page_epochs)
            page: auth_pb2.AuditLogResponse = await stub.AuditLog(request, timeout=CALL_TIMEOUT_S)
            log.keys.update({k.key_id: bytes(k.public_key) for k in page.directory_keys})
            log.entries += [
                LogEntry(e.sequence, e.account, bytes(e.account_key), e.version, bytes(e.device_list.body), bytes(e.device_list.signature))
                for e in page.entries
            ]
            have = log.entries[-1].sequence if log.entries else 0
            took = 0
            for h in page.heads:
                if h.entries_upto > have:
                    break  # its entries come with the next page
                log.heads.append(
                    EpochHead(h.epoch, bytes(h.map_root), h.entries_upto, h.time_ms, bytes(h.log_root), h.key_id, bytes(h.signature))
                )
                took += 1
            if not page.heads:
                return log
            if took == 0 and not page.entries:
                h = page.heads[0]
                raise AuditViolation(
                    f"region {region}: epoch {h.epoch} seals entries up to {h.entries_upto}, which the log does not hold"
                )
    raise AuditViolation(f"region {region}: the log did not end within {MAX_PAGES} pages")


def verify(log: RegionLog, *, from_epoch: int = 0, directory_keys: dict[str, bytes] | None = None) -> Verified:
    """Replays ``log``; AuditViolation at the first thing an honest directory would not have appended."""
    if not log.heads:
        raise AuditViolation(f"region {log.region}: no epoch is sealed")
    if from_epoch >= len(log.heads):
        raise AuditViolation(f"region {log.region}: --from {from_epoch} is past the latest epoch {len(log.heads) - 1}")
    keys = directory_keys if directory_keys is not None else log.keys
    tree = SparseMerkleTree()
    leaves: dict[str, LogEntry] = {}
    account_keys: dict[str, bytes] = {}
    log_leaves: list[bytes] = []
    cache: dict[tuple[int, int], bytes] = {}
    roots: list[bytes] = []
    position = 0
    applied = 0
    last_sequence = 0
    where = f"region {log.region}"
    for position, head in enumerate(log.heads):
        if head.epoch != position:
            kind = "rollback" if head.epoch < position else "gap"
            raise AuditViolation(f"{where}: head message {position} is epoch {head.epoch} ({kind} or fork of the log)")
        if position >= from_epoch:
            key = keys.get(head.key_id)
            if key is None:
                raise AuditViolation(f"{where}: epoch {head.epoch} is signed by unknown directory key {head.key_id}")
            try:
                head.verify(key)
            except HeadSignatureError as exc:
                raise AuditViolation(f"{where}: {exc}") from exc
        while applied < len(log.entries) and log.entries[applied].sequence <= head.entries_upto:
            entry = log.entries[applied]
            if entry.sequence <= last_sequence:
                raise AuditViolation(f"{where}: entry {entry.sequence} out of order")
            last_sequence = entry.sequence
            _check_entry(where, entry, account_keys)
            current = leaves.get(entry.account)
            if current is None or entry.version > current.version:
                leaves[entry.account] = entry
                tree.set(map_key(entry.account), leaf_value(entry.account_key, entry.version, entry.body))
            applied += 1
        if tree.root() != head.map_root:
            raise AuditViolation(
                f"{where}: epoch {head.epoch}'s map root is not the replay of the log's entries up to "
                f"{head.entries_upto} (an entry dropped, added or changed)"
            )
        log_leaves.append(log_leaf_hash(head.leaf_data()))
        root = log_root(log_leaves, cache)
        if root != head.log_root:
            raise AuditViolation(f"{where}: epoch {head.epoch}'s log root does not cover epochs 0..{head.epoch} as appended")
        roots.append(root)
    latest = log.heads[-1]
    return Verified(log.region, latest.epoch, latest.log_root, latest.map_root, applied, tuple(roots))


def _check_entry(where: str, entry: LogEntry, account_keys: dict[str, bytes]) -> None:
    known = account_keys.setdefault(entry.account, entry.account_key)
    if known != entry.account_key:
        raise AuditViolation(f"{where}: entry {entry.sequence} gives {entry.account!r} another account key (set once per account)")
    try:
        verify_device_list(entry.account_key, entry.account, entry.body, entry.signature)
    except (DeviceListSignatureError, CryptoError) as exc:
        raise AuditViolation(f"{where}: entry {entry.sequence}: the list is not signed by {entry.account!r}'s account key") from exc


def compare(results: Sequence[Verified]) -> None:
    """Two regions must show one history: the same log root at every epoch both have."""
    for i, a in enumerate(results):
        for b in results[i + 1 :]:
            for epoch in range(min(len(a.roots), len(b.roots))):
                if a.roots[epoch] != b.roots[epoch]:
                    raise AuditViolation(f"fork: regions {a.region} and {b.region} show different roots for epoch {epoch}")


def check_state(path: Path, latest: Verified) -> None:
    """The log still extends the epoch audited last time (kept in ``path``), then remembers this one."""
    if path.exists():
        last = json.loads(path.read_text())
        epoch, root = int(last["epoch"]), bytes.fromhex(last["log_root"])
        if latest.epoch < epoch:
            raise AuditViolation(f"rollback: epoch {latest.epoch} is served after epoch {epoch} was audited")
        if latest.roots[epoch] != root:
            raise AuditViolation(f"fork: epoch {epoch} has another root than when it was audited")
    path.write_text(json.dumps({"epoch": latest.epoch, "log_root": latest.log_root.hex()}))


def statement(latest: Verified, regions: Sequence[str], from_epoch: int, auditor: nacl.signing.SigningKey) -> dict[str, object]:
    """The signed statement: epochs ``from_epoch``..latest verified, with the latest roots
    (format: ``xchat.client.crypto.auditing``, which clients requiring an auditor verify)."""
    return sign_statement(
        regions=list(regions), from_epoch=from_epoch, epoch=latest.epoch, log_root=latest.log_root,
        map_root=latest.map_root, entries=latest.entries, auditor=auditor,
    )


async def publish(endpoints: Sequence[str], signed: dict[str, object], *, root_certificates: bytes | None = None) -> str:
    """Hands the statement to the directory (``Auth.PublishAuditStatement``), which keeps the latest
    one per auditor for every region and serves it to clients that require an auditor; refused
    unless the deployment lists this auditor's key. Tries ``endpoints`` in order; returns the one
    that took it (the last refusal is raised when none did)."""
    raw = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
    request = auth_pb2.PublishAuditStatementRequest(statement=raw)
    failure: grpc.aio.AioRpcError | None = None
    for endpoint in endpoints:
        channel = (
            grpc.aio.secure_channel(endpoint, grpc.ssl_channel_credentials(root_certificates))
            if root_certificates is not None
            else grpc.aio.insecure_channel(endpoint)
        )
        async with channel:
            try:
                await auth_pb2_grpc.AuthStub(channel).PublishAuditStatement(request, timeout=CALL_TIMEOUT_S)
                return endpoint
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    # A refusal: every region of the deployment refuses it alike.
                    raise PublishRefused(f"{exc.code().name}: {exc.details()}") from exc
                failure = exc
    assert failure is not None, "no endpoint to publish to"
    raise failure


def read_auditor_key(path: Path) -> nacl.signing.SigningKey:
    """A base64 Ed25519 seed (``xchat keygen`` writes the same format)."""
    try:
        seed = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--auditor-key {path}: not a readable base64 file ({exc})") from exc
    if len(seed) != 32:
        raise ValueError(f"--auditor-key {path}: expected a 32-byte Ed25519 seed, got {len(seed)} bytes")
    return nacl.signing.SigningKey(seed)


def read_directory_key(path: Path) -> tuple[str, bytes]:
    """A base64 Ed25519 public key (``token-public.key`` of ``xchat keygen``) and its key id."""
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--directory-key {path}: not a readable base64 file ({exc})") from exc
    if len(key) != 32:
        raise ValueError(f"--directory-key {path}: expected a 32-byte Ed25519 public key, got {len(key)} bytes")
    return directory_key_id(key), key


async def audit(
    regions: dict[str, str], *, from_epoch: int, auditor: nacl.signing.SigningKey,
    root_certificates: bytes | None = None, state: Path | None = None,
    directory_keys: dict[str, bytes] | None = None, publish_statement: bool = False,
) -> dict[str, object]:
    """Fetches and verifies each region's log, compares them, returns the signed statement.

    ``directory_keys``: the deployment's directory keys by id, known to the auditor out of band;
    None: the keys the directory itself lists (then only consistency, not authorship, is checked).
    ``publish_statement``: also hand it to the directory (the first region that answers)."""
    results = []
    for name, endpoint in regions.items():
        log = await fetch(name, endpoint, root_certificates=root_certificates)
        results.append(verify(log, from_epoch=from_epoch, directory_keys=directory_keys))
    compare(results)
    latest = max(results, key=lambda r: r.epoch)
    if state is not None:
        check_state(state, latest)
    signed = statement(latest, list(regions), from_epoch, auditor)
    if publish_statement:
        await publish(list(regions.values()), signed, root_certificates=root_certificates)
    return signed

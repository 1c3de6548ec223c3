"""Assembles the services a process runs (one, or all four for development).

This is the entry-point layer: it alone imports several services. Each
service gets the shared Store, the process's token verifier and its own
domain object. The token keys live in :class:`TokenHolders` (one verifier
for the edge and mailbox, auth's signer, the key transparency sealer); the
key-file watcher (``xchat.core.tokenkeys``) replaces them all at once when the
files change, without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.signing

from xchat.auth.accounts import Accounts
from xchat.auth.auditstatements import AuditStatements
from xchat.auth.keylog import KeyLog
from xchat.auth.service import AuthServicer
from xchat.core.authz import token_keys, token_signer, token_verifier
from xchat.core.devices import DeviceDirectory
from xchat.core.ratelimit import Rate, RateLimiter
from xchat.core.server import Registration, RunningServer, start_health, start_server, stop_server
from xchat.core.settings import ServiceSettings
from xchat.core.store import (
    BUCKET_ACCOUNTS,
    BUCKET_ATTACHMENT_QUOTA,
    BUCKET_DEVICES,
    BUCKET_KT_AUDIT,
    BUCKET_PREKEYS,
    Store,
)
from xchat.core.tokenkeys import KeyFileWatcher, TokenKeys
from xchat.core.tokens import TokenSigner, TokenVerifier
from xchat.keys.claims import PrekeyClaims
from xchat.keys.prekeys import PrekeyDirectory
from xchat.keys.service import KeysServicer
from xchat.mailbox.service import MailboxServicer
from xchat.relay.attachment_quota import AttachmentQuota, QuotaLimits
from xchat.relay.attachments import Attachments
from xchat.relay.attachments_service import AttachmentsServicer
from xchat.core.permissions import BUCKET_PUSH
from xchat.mailbox.webhook import WebhookSender
from xchat.relay.ephemeral import EphemeralRelay
from xchat.relay.sending import Relay
from xchat.relay.service import RelayServicer
from xchat.v1 import attachments_pb2, attachments_pb2_grpc
from xchat.v1 import auth_pb2, auth_pb2_grpc, keys_pb2, keys_pb2_grpc, mailbox_pb2, mailbox_pb2_grpc, relay_pb2, relay_pb2_grpc

log = logging.getLogger(__name__)
# Grace for in-flight calls (10 s) plus draining NATS (5 s), with room to spare.
STOP_DEADLINE_S = 20.0


def _directory(store: Store) -> DeviceDirectory:
    """Device records for hot paths: leader reads, a replica when the leader is slow (ADR 0013)."""
    return DeviceDirectory(store.bucket(BUCKET_DEVICES), replica=store.replica(BUCKET_DEVICES))


@dataclass
class TokenHolders:
    """Everything in the process that holds a token key, replaced together by :meth:`apply`."""

    verifier: TokenVerifier
    signer: TokenSigner | None = None
    keylog: KeyLog | None = None
    # Told the accepted key ids after each change (mailbox ends the Syncs opened with a dropped key).
    on_change: list[Callable[[frozenset[str]], None]] = field(default_factory=list)

    def apply(self, keys: TokenKeys) -> None:
        """Swap in ``keys``; raises (changing nothing) when they cannot serve this process."""
        accepted = [nacl.signing.VerifyKey(k) for k in keys.accepted]
        signing = nacl.signing.SigningKey(keys.signing_seed) if keys.signing_seed is not None else None
        if signing is None and (self.signer is not None or self.keylog is not None):
            raise ValueError("auth needs a signing key")
        if not accepted:
            raise ValueError("no accepted key")
        # Plain assignments on the event loop: no call sees half of the change.
        self.verifier.replace_keys(accepted)
        if signing is not None and self.signer is not None:
            self.signer.replace_key(signing)
        if signing is not None and self.keylog is not None:
            self.keylog.replace_signing_key(signing, (*keys.accepted, *keys.retired))
        for listener in self.on_change:
            listener(frozenset(keys.accepted_kids))


def registrations(settings: ServiceSettings, store: Store, holders: TokenHolders | None = None) -> list[Registration]:
    """``holders``: filled with the signer and sealer auth creates (default: a private set)."""
    holders = holders or TokenHolders(token_verifier(settings))
    verifier = holders.verifier
    out: list[Registration] = []
    if "auth" in settings.services:
        signer = token_signer(settings)  # asserts auth's signing seed; the directory signs with it too (ADR 0014)
        assert settings.token_signing_seed is not None
        keylog = KeyLog(
            store.js,
            nacl.signing.SigningKey(settings.token_signing_seed),
            interval_s=settings.kt_epoch_interval_s,
            known_keys=(*token_keys(settings).accepted, *settings.token_retired_public_keys),
            stopped=lambda: store.nc.is_closed,
        )
        holders.signer, holders.keylog = signer, keylog
        accounts = Accounts(
            store, signer, refresh_lifetime_s=settings.refresh_token_lifetime_s, keylog=keylog
        )
        out.append(
            Registration(
                auth_pb2.DESCRIPTOR.services_by_name["Auth"].full_name,
                auth_pb2_grpc.add_AuthServicer_to_server,
                # Authorisation and per-address limits: xchat.core.edge.
                AuthServicer(accounts, AuditStatements(store.bucket(BUCKET_KT_AUDIT), settings.kt_auditor_keys)),
                prepare=keylog.start,  # the key transparency sealer (docs/adr/0014)
            )
        )
    if "keys" in settings.services:
        claims = PrekeyClaims(Rate(settings.prekey_claim_rate, settings.prekey_claim_burst))
        directory = PrekeyDirectory(
            store.bucket(BUCKET_PREKEYS), store.bucket(BUCKET_ACCOUNTS), DeviceDirectory(store.bucket(BUCKET_DEVICES))
        )
        out.append(
            Registration(
                keys_pb2.DESCRIPTOR.services_by_name["Keys"].full_name,
                keys_pb2_grpc.add_KeysServicer_to_server,
                KeysServicer(directory, claims),
                limiters=claims.limiters,
            )
        )
    if "relay" in settings.services:
        relay_devices = _directory(store)
        relay = Relay(store, relay_devices, max_ciphertext_bytes=settings.max_ciphertext_bytes)
        signals = RateLimiter(Rate(settings.ephemeral_rate, settings.ephemeral_burst), what="ephemeral signals",
                              per="sender or recipient device")
        envelopes = RateLimiter(Rate(settings.send_rate, settings.send_burst), what="envelopes")
        strangers = RateLimiter(
            Rate(settings.stranger_rate, settings.stranger_burst), what="sealed envelopes from strangers", per="recipient device"
        )
        stranger_senders = RateLimiter(
            Rate(settings.stranger_rate, settings.stranger_burst), what="sealed envelopes to strangers", per="client address"
        )
        out.append(
            Registration(
                relay_pb2.DESCRIPTOR.services_by_name["Relay"].full_name,
                relay_pb2_grpc.add_RelayServicer_to_server,
                RelayServicer(
                    relay,
                    store_timeout_s=settings.store_timeout_s,
                    limiter=envelopes,
                    strangers=strangers,
                    stranger_senders=stranger_senders,
                    ephemeral=EphemeralRelay(store, relay_devices, limiter=signals),
                ),
                limiters={"envelopes": envelopes, "strangers": strangers, "stranger-senders": stranger_senders,
                          "ephemeral": signals},
            )
        )
        out.append(_attachments(settings, store))
    if "mailbox" in settings.services:
        mailbox = MailboxServicer(
            store, verifier, _directory(store), store_timeout_s=settings.store_timeout_s,
            push_bucket=store.bucket(BUCKET_PUSH),
            push_sender=WebhookSender(settings.push_webhook_url) if settings.push_webhook_url else None,
            push_coalesce_s=settings.push_coalesce_s,
            stream_end_spread_s=settings.token_key_stream_end_s,
            region=settings.region,
        )
        holders.on_change.append(mailbox.token_keys_changed)
        out.append(
            Registration(
                mailbox_pb2.DESCRIPTOR.services_by_name["Mailbox"].full_name,
                mailbox_pb2_grpc.add_MailboxServicer_to_server,
                mailbox,
                prepare=mailbox.prepare,
                stop=mailbox.stop,
            )
        )
    return out


def _attachments(settings: ServiceSettings, store: Store) -> Registration:
    """Attachments ride in the relay process (docs/attachments.md): it owns the bucket."""
    quota = AttachmentQuota(
        store.bucket(BUCKET_ATTACHMENT_QUOTA),
        QuotaLimits(bytes=settings.attachment_quota_bytes, count=settings.attachment_quota_count),
    )
    attachments = Attachments(
        store.nc, store.js, quota,
        max_bytes=settings.attachment_max_bytes, ttl_s=settings.attachment_ttl_s, timeout_s=settings.store_timeout_s,
    )
    servicer = AttachmentsServicer(attachments)
    return Registration(
        attachments_pb2.DESCRIPTOR.services_by_name["Attachments"].full_name,
        attachments_pb2_grpc.add_AttachmentsServicer_to_server,
        servicer,
        limiters={"attachment-bytes": servicer.upload_bytes, "attachment-download-bytes": servicer.download_bytes},
    )


class ServiceProcess:
    """Started servers of one process; ``stop`` is graceful."""

    def __init__(
        self, store: Store, running: RunningServer, watcher: asyncio.Task[None], keys: KeyFileWatcher | None = None
    ) -> None:
        self.store = store
        self.running = running
        self._watcher = watcher
        # Re-reads the token key files (None: keys given in code, nothing to watch).
        self.keys = keys

    @property
    def port(self) -> int:
        return self.running.port

    @classmethod
    async def start(cls, settings: ServiceSettings) -> ServiceProcess:
        # Health first (NOT_SERVING): probes are answered while NATS is still being reached.
        early = await start_health(settings)
        try:
            store = await Store.connect(settings, name=f"xchat-{'+'.join(settings.services)}-{settings.region}")
        except BaseException:
            if early[1] is not None:
                await early[1].stop(0)
            raise
        holders = TokenHolders(token_verifier(settings))
        try:
            await store.ensure_resources()
            running, watcher = await start_server(
                registrations(settings, store, holders), settings, store, early, verifier=holders.verifier
            )
        except BaseException:
            if early[1] is not None:
                await early[1].stop(0)
            await store.close()
            raise
        keys = None
        if settings.token_key_files is not None:
            keys = KeyFileWatcher(
                settings.token_key_files, token_keys(settings), holders.apply, interval_s=settings.token_key_reload_s
            )
            keys.start()
        return cls(store, running, watcher, keys)

    async def stop(self, grace: float = 10.0) -> None:
        if self.keys is not None:
            await self.keys.stop()
        await stop_server(self.running, self._watcher, grace=grace)
        await self.store.close()


async def serve_forever(settings: ServiceSettings, *, ready_message: bool = True) -> None:
    """Runs until SIGINT/SIGTERM, then stops gracefully (in-flight sends finish)."""
    process = await ServiceProcess.start(settings)
    if ready_message:
        print(f"xchat {'+'.join(settings.services)} region={settings.region} listening on port {process.port}", flush=True)
        if process.running.metrics_server is not None:
            print(f"metrics on http://{settings.metrics_listen}/metrics (port {process.running.metrics_server.port})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing in-flight calls")
    try:
        # Bounded: a store that never answers again must not keep the process alive.
        await asyncio.wait_for(process.stop(), STOP_DEADLINE_S)
    except asyncio.TimeoutError:
        log.warning("graceful stop did not finish in %.0fs; exiting anyway", STOP_DEADLINE_S)

"""The NATS JetStream connection of one service process, and its resources.

All durable state lives here: the mailbox stream (one subject per device, no
consumer per device) and KV buckets with revision compare-and-set. Every
replica count comes from settings; with the mesh's ``unique_tag`` each
replica lands in a different region.

Foreign NATS errors are translated to ``xchat.core.errors`` in ``translate``,
the one place that knows nats-py's exception types.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.kv import KeyValue

from xchat.core.errors import Unavailable, XChatError
from xchat.core.permissions import (
    ATTACHMENTS_BUCKET,
    ATTACHMENTS_OWNER,
    ATTACHMENTS_STREAM,
    BUCKET_ACCOUNTS,
    BUCKET_ATTACHMENT_QUOTA,
    BUCKET_CHALLENGES,
    BUCKET_DEVICES,
    BUCKET_KT_AUDIT,
    BUCKET_PREKEYS,
    BUCKET_REFRESH,
    HEDGE_STREAM,
    KT_ENTRY_SUBJECT,
    KT_EPOCH_SUBJECT,
    KT_OWNER,
    KT_STREAM,
    MAILBOX_OWNER,
    MAILBOX_STREAM,
    NOTIFY_SUBJECTS,
    OWNED_BUCKETS,
    READ_BUCKETS,
    inbox_prefix,
)
from xchat.core.settings import ServiceSettings

__all__ = [
    "BUCKET_ACCOUNTS",
    "BUCKET_ATTACHMENT_QUOTA",
    "BUCKET_CHALLENGES",
    "BUCKET_DEVICES",
    "BUCKET_KT_AUDIT",
    "BUCKET_PREKEYS",
    "BUCKET_REFRESH",
    "HEDGE_STREAM",
    "HEDGE_WAKEUP_PREFIX",
    "MAILBOX_STREAM",
    "NOTIFY_SUBJECTS",
    "NOTIFY_SUBJECT_PREFIX",
    "STORE_ERRORS",
    "Store",
    "hedge_subject",
    "mailbox_subject",
    "notify_subject",
    "translate",
]

log = logging.getLogger(__name__)

MAILBOX_SUBJECT_PREFIX = "xchat.mbx."
HEDGE_SUBJECT_PREFIX = "xchat.mbh."
# The hedge stream only holds what was sent while the mailbox stream had no
# leader (seconds of traffic, read and acknowledged like the rest): a quarter
# of the mailbox stream's byte limit, so both fit a server's max_file_store.
HEDGE_BYTES_DIVISOR = 4
CHALLENGE_TTL_S = 120.0
# JetStream API error codes we react to (nats-server errors.json).
ERR_STREAM_NAME_IN_USE = 10058
ERR_WRONG_LAST_SEQUENCE = 10071
# Errors a forming or recovering cluster gives (nats-server errors.json):
# 10005 no suitable peers for placement, 10008 JetStream system temporarily
# unavailable, 10023 insufficient resources, 10074 cluster peer not member.
TRANSIENT_API_ERRORS = frozenset({10005, 10008, 10023, 10074, None})
# How long start-up keeps retrying resource creation while the cluster elects
# its meta leader.
ENSURE_DEADLINE_S = 60.0
# A repeated NATS client error is logged at most this often.
ERROR_LOG_INTERVAL_S = 30.0
# The prekeys bucket holds ~30 KB of public keys per device (post-quantum keys
# are 1,184 bytes each): it gets this many times ``bucket_max_bytes``.
PREKEYS_BUCKET_FACTOR = 4
# A key transparency entry: a device list (under 1.2 KB) and keys, base64 in JSON.
KT_MAX_MESSAGE_BYTES = 8 * 1024
# An attachment chunk (256 KiB, xchat.relay.attachments) and its headers.
ATTACHMENT_MAX_MESSAGE_BYTES = 256 * 1024 + 4096

T = TypeVar("T")


NOTIFY_SUBJECT_PREFIX = "xchat.ntf."
# A wake-up for an envelope relay stored in the hedge stream: b"h" + its sequence (ADR 0013).
HEDGE_WAKEUP_PREFIX = b"h"


def mailbox_subject(device: str) -> str:
    return f"{MAILBOX_SUBJECT_PREFIX}{device}"


def hedge_subject(device: str) -> str:
    """The device's subject in the hedge stream (ADR 0013)."""
    return f"{HEDGE_SUBJECT_PREFIX}{device}"


def notify_subject(device: str) -> str:
    """Core-NATS wake-up for a device's mailbox readers (no payload, not stored)."""
    return f"{NOTIFY_SUBJECT_PREFIX}{device}"


def translate(exc: BaseException) -> XChatError:
    """Maps a nats-py failure to the error a client should see."""
    if isinstance(exc, XChatError):
        return exc
    if isinstance(exc, nats.js.errors.APIError):
        return Unavailable(f"message store refused the operation: {exc.description or exc}")
    if isinstance(exc, (asyncio.TimeoutError, nats.errors.TimeoutError)):
        return Unavailable("message store did not answer in time (is a quorum of regions reachable?)")
    return Unavailable(f"message store unavailable: {type(exc).__name__}")


STORE_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, asyncio.TimeoutError)
# Seconds without a good health check (one a second, xchat.core.server) before the process
# counts as cut off from the store. Longer than a JetStream meta election: when the meta
# leader's region dies, the survivors' checks fail until the election ends (4-9 s; 7 s
# measured in a loaded kill drill, where a 6 s bound ended the survivors' Sync calls, which
# were delivering from their replicas, and stalled their users 6.7 s). Shorter than the
# safety poll and than waiting for a partition to heal (a cut-off region's calls wait until then).
CUT_OFF_AFTER_S = 15.0


class Store:
    """One NATS connection, its JetStream context and the opened buckets."""

    def __init__(
        self, nc: NatsClient, settings: ServiceSettings, *, reconnect_hooks: list[Callable[[], None]] | None = None
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=settings.store_timeout_s)
        self.settings = settings
        self._buckets: dict[str, KeyValue] = {}
        self._reconnect_hooks = reconnect_hooks if reconnect_hooks is not None else []
        # Loop time of the last sign that this process's view of the store may be
        # incomplete (JetStream unreachable, a reconnect): mailbox then reads the
        # hedge stream on every read, from its leader (ADR 0013). -inf: never.
        self.trouble_at = float("-inf")
        self._reconnect_hooks.append(self.note_trouble)
        # Set by the health watcher when no check succeeded for CUT_OFF_AFTER_S, or by
        # the region liveness beats (a partition, in about a second), cleared by the next
        # good check: this region cannot reach a working store (a partition, a lost
        # quorum). Mailbox then ends its Sync calls so clients move.
        self.cut_off = False
        self._last_ok = time.monotonic()
        self._cut_off_hooks: list[Callable[[], None]] = []
        # True while no other region is heard (set by xchat.core.liveness in mailbox processes).
        self.isolation: Callable[[], bool] = lambda: False

    def on_cut_off(self, hook: Callable[[], None]) -> None:
        """Calls ``hook`` each time the health checks find this process cut off from the store."""
        self._cut_off_hooks.append(hook)

    def health_checked(self, ok: bool) -> None:
        """The health watcher's verdict, once per check (see ``cut_off``)."""
        now = time.monotonic()
        if ok:
            self._last_ok = now
            # A region cut off while it held the meta leader answers health reads as leader
            # for a while (xchat.core.liveness): its silence outweighs them.
            if not self.isolation():
                self.cut_off = False
            return
        if now - self._last_ok >= CUT_OFF_AFTER_S:
            self.mark_cut_off()

    def mark_cut_off(self) -> None:
        """This process cannot reach a working store (the checks, or ``xchat.core.liveness``, found it);
        the next good health check clears it."""
        if self.cut_off:
            return
        self.cut_off = True
        for hook in list(self._cut_off_hooks):
            hook()

    def note_trouble(self) -> None:
        try:
            self.trouble_at = asyncio.get_running_loop().time()
        except RuntimeError:
            pass  # no loop: nothing reads it

    def troubled_within(self, seconds: float) -> bool:
        try:
            return asyncio.get_running_loop().time() - self.trouble_at < seconds
        except RuntimeError:
            return False

    def on_messages_lost(self, hook: Callable[[], None]) -> None:
        """Calls ``hook`` after a NATS reconnect or a slow-consumer drop: core-NATS
        messages (wake-ups) sent meanwhile may have been lost."""
        self._reconnect_hooks.append(hook)

    def replica(self, name: str) -> KeyValue:
        """``name`` read by direct gets from any replica (usually this region's), for reads that must
        not wait for a leader election; a replica can lag, so a miss there proves nothing (ADR 0013)."""
        self.bucket(name)  # opened by this process (permissions)
        return KeyValue(name=name, stream=f"KV_{name}", pre=f"$KV.{name}.", js=self.js, direct=True)

    def bucket(self, name: str) -> KeyValue:
        """An opened bucket; only those the process's services own or read are opened."""
        try:
            return self._buckets[name]
        except KeyError:
            raise RuntimeError(f"bucket {name} is not opened by this process (see xchat.core.permissions)") from None

    @classmethod
    async def connect(cls, settings: ServiceSettings, *, name: str) -> Store:
        hooks: list[Callable[[], None]] = []
        tls: ssl.SSLContext | None = None
        if settings.nats_ca is not None or any(u.startswith("tls://") for u in settings.nats_urls):
            tls = ssl.create_default_context(cafile=str(settings.nats_ca) if settings.nats_ca else None)
            if settings.tls is not None:
                # The NATS client port verifies client certificates: present ours.
                tls.load_cert_chain(str(settings.tls.cert), str(settings.tls.key))
        options: dict[str, object] = {
            "servers": list(settings.nats_urls),
            "name": name,
            # Keep trying for ever: a region outage must not end the process.
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "connect_timeout": 2,
            # The list is ordered own region first (``LocalMesh.nats_urls``, the operator):
            # nats-py shuffles it by default, which put a region's services on another
            # region's server, so freezing that region stalled them too (ADR 0013).
            "dont_randomize": True,
            "ping_interval": 5,
            "max_outstanding_pings": 2,
            "error_cb": _on_error(hooks),
            "disconnected_cb": _log_event("disconnected from NATS"),
            "reconnected_cb": _on_reconnected(hooks),
        }
        if tls is not None:
            options["tls"] = tls
        if settings.nats_user:
            options["user"] = settings.nats_user
            options["password"] = settings.nats_password or ""
            # Replies only below our own prefix: the user may subscribe nowhere else.
            options["inbox_prefix"] = inbox_prefix(settings.nats_user)
        # With reconnects unbounded, nats-py's first connect also retries for ever:
        # bounded here, so a process that never reached NATS ends with one line.
        nc = NatsClient()
        try:
            await asyncio.wait_for(nc.connect(**options), ENSURE_DEADLINE_S)  # type: ignore[arg-type]
        except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
            await nc.close()
            reason = f": {nc.last_error}" if nc.last_error else ""
            raise Unavailable(
                f"cannot connect to NATS at {','.join(settings.nats_urls)} within {ENSURE_DEADLINE_S:.0f}s{reason}"
            ) from exc
        return cls(nc, settings, reconnect_hooks=hooks)

    async def ensure_resources(self, *, create: bool = False) -> None:
        """Opens the buckets this process's services use, waiting until they exist.

        ``create``: also creates (or updates to the settings) the stream and the
        buckets they own: only the bootstrap user may (``xchat.mesh.bootstrap``);
        running services hold no STREAM.CREATE/UPDATE. Idempotent and safe to race.
        Ownership (and so the NATS permissions needed) is in ``xchat.core.permissions``.
        """
        services = set(self.settings.services)
        if create and MAILBOX_OWNER in services:
            await self._retry(lambda: self._ensure_stream(self._mailbox_config()))
            await self._retry(lambda: self._ensure_stream(self._hedge_config()))
        if create and KT_OWNER in services:
            await self._retry(lambda: self._ensure_stream(self._key_log_config()))
        if create and ATTACHMENTS_OWNER in services:
            await self._retry(lambda: self._ensure_stream(self._attachments_config()))
        # Services never wait on the mailbox stream: STREAM.INFO on it would list
        # every mailbox holder; until bootstrap made it, sends and reads are UNAVAILABLE.
        owned = [b for s in self.settings.services for b in OWNED_BUCKETS[s]]
        read = [b for s in self.settings.services for b in READ_BUCKETS[s] if b not in owned]
        if create:
            read = []  # bootstrap shapes storage; it never waits on another owner's bucket
        else:
            read, owned = list(dict.fromkeys([*owned, *read])), []
        for name in dict.fromkeys(owned):
            config = self._bucket_config(name)
            await self._retry(lambda c=config: self._ensure_bucket(c))  # type: ignore[misc]
            self._buckets[name] = self._leader_reads(name)
        for name in dict.fromkeys(read):
            await self._retry(lambda n=name: self._wait_for(lambda: self.js.key_value(n), n))  # type: ignore[misc]
            self._buckets[name] = self._leader_reads(name)

    def _leader_reads(self, name: str) -> KeyValue:
        # Reads go to the bucket's leader (read-your-writes; compare-and-set reads
        # its revision) even where the bucket also allows direct gets (``replica``).
        return KeyValue(name=name, stream=f"KV_{name}", pre=f"$KV.{name}.", js=self.js, direct=False)

    def _bucket_config(self, name: str) -> KeyValueConfig:
        s = self.settings
        ttl = {BUCKET_CHALLENGES: CHALLENGE_TTL_S, BUCKET_REFRESH: float(s.refresh_token_lifetime_s),
               BUCKET_ATTACHMENT_QUOTA: float(s.attachment_ttl_s)}.get(name)
        # Bounded: a full bucket refuses writes (discard new) instead of filling a volume.
        max_bytes = s.bucket_max_bytes * (PREKEYS_BUCKET_FACTOR if name == BUCKET_PREKEYS else 1)
        return KeyValueConfig(
            bucket=name,
            replicas=s.replicas,
            history=1,
            ttl=ttl,
            storage=StorageType.FILE,
            max_bytes=max_bytes,
            # Device records are read on every send: direct gets from a local
            # replica answer while the bucket elects a leader (ADR 0013).
            direct=name == BUCKET_DEVICES,
        )

    async def _wait_for(self, open_: Callable[[], Awaitable[T]], what: str) -> T:
        """Opens a resource another service owns; retried (as unavailable) until it exists."""
        try:
            return await open_()
        except (nats.js.errors.NotFoundError, nats.js.errors.BucketNotFoundError) as exc:
            log.info("%s does not exist yet (its owner creates it); waiting", what)
            raise asyncio.TimeoutError(f"{what} not created yet") from exc

    def _mailbox_config(self) -> StreamConfig:
        s = self.settings
        return StreamConfig(
            name=MAILBOX_STREAM,
            subjects=[f"{MAILBOX_SUBJECT_PREFIX}*"],
            storage=StorageType.FILE,
            num_replicas=s.replicas,
            max_age=float(s.mailbox_ttl_s),
            # Per-device quota: a full mailbox refuses new envelopes instead of
            # silently dropping the oldest.
            max_msgs_per_subject=s.mailbox_quota,
            # All mailboxes together: a full stream refuses every send rather
            # than filling the volume. JetStream has no per-subject byte limit:
            # one mailbox can hold mailbox_quota envelopes of up to
            # max_msg_size each, bounded by max_bytes (ADR 0008).
            max_bytes=s.mailbox_max_bytes,
            discard=DiscardPolicy.NEW,
            discard_new_per_subject=True,
            duplicate_window=s.duplicate_window_s,
            allow_direct=True,
            # Disappearing messages: relay stores an envelope with a sender's TTL hint
            # (``Nats-TTL``, at most max_age), so the server's copy expires when it is due.
            allow_msg_ttl=True,
            max_msg_size=s.max_ciphertext_bytes + 4096,
        )

    def _hedge_config(self) -> StreamConfig:
        """Same limits as the mailbox stream, its own subjects, a quarter of the bytes (ADR 0013)."""
        config = self._mailbox_config()
        config.name = HEDGE_STREAM
        config.subjects = [f"{HEDGE_SUBJECT_PREFIX}*"]
        config.max_bytes = max(1, self.settings.mailbox_max_bytes // HEDGE_BYTES_DIVISOR)
        return config

    def _attachments_config(self) -> StreamConfig:
        """The attachment object-store bucket (the stream nats-py's ``create_object_store`` makes,
        bounded and aged by settings; layout in ``xchat.relay.attachments``)."""
        s = self.settings
        return StreamConfig(
            name=ATTACHMENTS_STREAM,
            subjects=[f"$O.{ATTACHMENTS_BUCKET}.C.>", f"$O.{ATTACHMENTS_BUCKET}.M.>"],
            storage=StorageType.FILE,
            num_replicas=s.replicas,
            max_age=float(s.attachment_ttl_s),
            max_bytes=s.attachments_max_bytes,
            discard=DiscardPolicy.NEW,
            allow_rollup_hdrs=True,
            allow_direct=True,
            duplicate_window=s.duplicate_window_s,
            max_msg_size=ATTACHMENT_MAX_MESSAGE_BYTES,
        )

    def _key_log_config(self) -> StreamConfig:
        """Key transparency's log (docs/adr/0014): append-only at the store, bounded, kept for ever."""
        s = self.settings
        return StreamConfig(
            name=KT_STREAM,
            subjects=[KT_ENTRY_SUBJECT, KT_EPOCH_SUBJECT],
            storage=StorageType.FILE,
            num_replicas=s.replicas,
            max_bytes=s.bucket_max_bytes,
            discard=DiscardPolicy.NEW,
            deny_delete=True,
            deny_purge=True,
            duplicate_window=s.duplicate_window_s,
            allow_direct=True,
            max_msg_size=KT_MAX_MESSAGE_BYTES,
        )

    async def _ensure_stream(self, config: StreamConfig) -> None:
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != ERR_STREAM_NAME_IN_USE:
                raise
            await self.js.update_stream(config)

    async def _ensure_bucket(self, config: KeyValueConfig) -> KeyValue:
        try:
            return await self.js.create_key_value(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != ERR_STREAM_NAME_IN_USE:
                raise
            if config.direct:
                await self._allow_direct(f"KV_{config.bucket}")
            return await self.js.key_value(config.bucket)

    async def _allow_direct(self, stream: str) -> None:
        """A bucket made before it allowed direct gets (the devices bucket before ADR 0013) gets
        them now: without, device records are unreadable while the bucket elects a leader."""
        info = await self.js.stream_info(stream)
        if not info.config.allow_direct:
            info.config.allow_direct = True
            await self.js.update_stream(info.config)
            log.info("stream %s now allows direct gets (replica reads during elections)", stream)

    async def _retry(self, op: Callable[[], Awaitable[T]]) -> T:
        """Retries while the cluster is still forming (no meta leader, peers not yet
        connected: "no suitable peers for placement") at start-up or in recovery.

        Gives up after ENSURE_DEADLINE_S with the store's own reason, so a real
        misconfiguration (more replicas than regions) still ends the process clearly.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ENSURE_DEADLINE_S
        delay = 0.2
        while True:
            try:
                return await op()
            except STORE_ERRORS as exc:
                if isinstance(exc, nats.js.errors.APIError) and exc.err_code not in TRANSIENT_API_ERRORS:
                    raise
                if loop.time() > deadline:
                    raise translate(exc) from exc
                log.info("JetStream not ready (%s); retrying", getattr(exc, "description", None) or type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def healthy(self, timeout: float = 2.0) -> bool:
        """True when this process can reach JetStream with a working meta leader."""
        if not self.nc.is_connected:
            self.note_trouble()
            return False
        try:
            await asyncio.wait_for(self.js.account_info(), timeout)
            return True
        except STORE_ERRORS:
            self.note_trouble()
            return False

    async def close(self) -> None:
        if self.nc.is_closed:
            return
        try:
            await asyncio.wait_for(self.nc.drain(), 5)
        except (nats.errors.Error, asyncio.TimeoutError, asyncio.CancelledError):
            await self.nc.close()


def _on_error(hooks: list[Callable[[], None]]) -> Callable[[Exception], Awaitable[None]]:
    # nats-py reports every failed (re)connect attempt, twice a second while NATS is
    # down: the same error is logged once, then at most every ERROR_LOG_INTERVAL_S.
    last: dict[str, float] = {}
    repeats: dict[str, int] = {}

    async def callback(exc: Exception) -> None:
        text, now = str(exc), time.monotonic()
        if text in last and now - last[text] < ERROR_LOG_INTERVAL_S:
            repeats[text] = repeats.get(text, 0) + 1
        else:
            more = f" (and {repeats.pop(text)} more times since)" if repeats.get(text) else ""
            last.clear()
            last[text] = now
            log.warning("NATS error: %s%s", text, more)
        if isinstance(exc, nats.errors.SlowConsumerError):
            for hook in hooks:
                hook()

    return callback


def _on_reconnected(hooks: list[Callable[[], None]]) -> Callable[[], Awaitable[None]]:
    async def callback() -> None:
        log.info("reconnected to NATS")
        for hook in hooks:
            hook()

    return callback


def _log_event(text: str) -> Callable[[], Awaitable[None]]:
    async def callback() -> None:
        log.info(text)

    return callback

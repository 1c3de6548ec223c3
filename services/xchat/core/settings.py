"""Process settings: loaded once at the edge (CLI flags and ``XCHAT_*`` env), frozen, passed down.

Nothing below ``xchat.cli`` reads the environment.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from xchat.core.tokenkeys import KeyFileError, TokenKeyFiles, read_key_file, read_signing_seed
from xchat.core.tokens import DEFAULT_AUDIENCE

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
# Three regions, one replica each (placement via the NATS unique_tag): an ack
# means a quorum of regions holds the write.
DEFAULT_REPLICAS = 3
# Access tokens are verified offline, so revocation takes effect within this.
DEFAULT_ACCESS_TOKEN_LIFETIME_MS = 5 * 60 * 1000
DEFAULT_REFRESH_TOKEN_LIFETIME_S = 30 * 24 * 3600
# Undelivered envelopes are kept two weeks, then dropped by JetStream's max_age.
DEFAULT_MAILBOX_TTL_S = 14 * 24 * 3600
# Per-device backlog quota; sends beyond it fail with RESOURCE_EXHAUSTED.
DEFAULT_MAILBOX_QUOTA = 10_000
# Bytes the mailbox stream may hold, all devices together; beyond it sends are
# refused. JetStream reserves it on every server holding a replica, so it must
# fit that server's max_file_store (6 GB in the local mesh).
DEFAULT_MAILBOX_MAX_BYTES = 1024**3
# Bytes each KV bucket may hold (the prekeys bucket four times this: ~30 KB of
# keys per device).
DEFAULT_BUCKET_MAX_BYTES = 64 * 1024**2
# JetStream de-duplicates Nats-Msg-Id within this window; beyond it the
# recipient SDK's own id set de-duplicates.
DEFAULT_DUPLICATE_WINDOW_S = 3600.0
# How long a store operation may take before the RPC fails with UNAVAILABLE.
DEFAULT_STORE_TIMEOUT_S = 5.0
# Largest end-to-end ciphertext accepted by relay.
DEFAULT_MAX_CIPHERTEXT_BYTES = 128 * 1024
# Attachments (docs/attachments.md): the largest one (ciphertext; the SDK adds
# 16 bytes per 64 KiB, so a 127.9 MiB file fits), what one account may hold,
# how long they are kept, and the bucket's bytes all accounts together (reserved
# on every server holding a replica, like the mailbox stream: it must fit
# max_file_store beside it).
DEFAULT_ATTACHMENT_MAX_BYTES = 128 * 1024**2
DEFAULT_ATTACHMENT_QUOTA_BYTES = 1024**3
DEFAULT_ATTACHMENT_TTL_S = 30 * 24 * 3600
DEFAULT_ATTACHMENTS_MAX_BYTES = 2 * 1024**3
# Attachments one account may hold at once (bounds its quota record).
DEFAULT_ATTACHMENT_QUOTA_COUNT = 500
# Per device, per relay process: envelopes per second and burst. Generous for
# people, tight enough that one device cannot monopolise a region.
DEFAULT_SEND_RATE = 500.0
DEFAULT_SEND_BURST = 5000.0
# Sealed sends from strangers to a device that accepts them from anyone
# (no delivery key), per recipient device: a person's first messages, not a
# campaign; contacts with the key and authenticated senders do not pay it.
DEFAULT_STRANGER_RATE = 1.0
DEFAULT_STRANGER_BURST = 20.0
# Ephemeral signals (typing, presence), per sender device and per recipient
# device: a typing indicator every few seconds per conversation, not a stream.
DEFAULT_EPHEMERAL_RATE = 2.0
DEFAULT_EPHEMERAL_BURST = 10.0
# Push wake-ups (docs/push.md): at most one per device per this many seconds,
# however many envelopes land; the app reads everything once it is awake.
DEFAULT_PUSH_COALESCE_S = 30.0
# Unauthenticated calls (register, challenge), per caller address per process.
DEFAULT_AUTH_RATE = 20.0
DEFAULT_AUTH_BURST = 100.0
# Authenticated calls other than sends (devices, prekeys, mailbox), per device
# per process: an app makes a handful per minute; a runaway loop is cut off.
DEFAULT_CALL_RATE = 20.0
DEFAULT_CALL_BURST = 200.0
# Prekey bundle fetches per device per process: starting conversations with
# a whole address book is a burst; a steady stream of fetches is a scraper.
DEFAULT_FETCH_RATE = 2.0
DEFAULT_FETCH_BURST = 50.0
# One-time prekeys handed out per target account and per fetching device, per
# process. Beyond it a bundle comes without one-time keys (PQXDH then uses the
# signed and last-resort prekeys): a stranger cannot drain someone's keys, and
# senders are never refused. 20 at once covers a 16-device account being
# fetched once plus margin; 6 a minute is many new conversations for a person.
DEFAULT_PREKEY_CLAIM_RATE = 0.1
DEFAULT_PREKEY_CLAIM_BURST = 20.0
# Audience of access tokens: a token minted for another deployment (or purpose)
# signed by the same key is refused.
DEFAULT_TOKEN_AUDIENCE = DEFAULT_AUDIENCE
# Key transparency (docs/adr/0014): an epoch seals the log's new entries at
# most this often, so a changed device list is checkable by contacts within
# about this long; epochs are sealed only when something changed.
DEFAULT_KT_EPOCH_INTERVAL_S = 1.0
# Token key files are re-read this often (xchat.core.tokenkeys): a rotated key
# is in use within this after the file changes (Kubernetes adds its own
# Secret-volume refresh, up to about a minute, before that). Reading three
# small files is cheap; 5 s keeps a rotation's waits short.
DEFAULT_TOKEN_KEY_RELOAD_S = 5.0
# Open Sync calls authenticated with a token key that is then dropped end at a
# random moment within this (mailbox), so the devices online during a
# rotation's drop reconnect spread out, not all at once.
DEFAULT_TOKEN_KEY_STREAM_END_S = 30.0
SERVICE_NAMES = ("auth", "keys", "relay", "mailbox")


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None = None


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    region: str
    listen: str = DEFAULT_LISTEN
    # Plaintext grpc.health.v1 only (no application service), for kubelet's
    # gRPC probes, which cannot speak TLS. None: health on the main port only.
    health_listen: str | None = None
    nats_urls: tuple[str, ...] = (DEFAULT_NATS_URL,)
    nats_user: str | None = None
    nats_password: str | None = None
    nats_ca: Path | None = None
    # Ed25519 seed (auth only) and public key for access tokens.
    token_signing_seed: bytes | None = None
    token_public_key: bytes | None = None
    tls: TlsFiles | None = None
    replicas: int = DEFAULT_REPLICAS
    access_token_lifetime_ms: int = DEFAULT_ACCESS_TOKEN_LIFETIME_MS
    refresh_token_lifetime_s: int = DEFAULT_REFRESH_TOKEN_LIFETIME_S
    mailbox_ttl_s: int = DEFAULT_MAILBOX_TTL_S
    mailbox_quota: int = DEFAULT_MAILBOX_QUOTA
    mailbox_max_bytes: int = DEFAULT_MAILBOX_MAX_BYTES
    bucket_max_bytes: int = DEFAULT_BUCKET_MAX_BYTES
    duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S
    store_timeout_s: float = DEFAULT_STORE_TIMEOUT_S
    max_ciphertext_bytes: int = DEFAULT_MAX_CIPHERTEXT_BYTES
    attachment_max_bytes: int = DEFAULT_ATTACHMENT_MAX_BYTES
    attachment_quota_bytes: int = DEFAULT_ATTACHMENT_QUOTA_BYTES
    attachment_quota_count: int = DEFAULT_ATTACHMENT_QUOTA_COUNT
    attachment_ttl_s: int = DEFAULT_ATTACHMENT_TTL_S
    attachments_max_bytes: int = DEFAULT_ATTACHMENTS_MAX_BYTES
    send_rate: float = DEFAULT_SEND_RATE
    send_burst: float = DEFAULT_SEND_BURST
    stranger_rate: float = DEFAULT_STRANGER_RATE
    stranger_burst: float = DEFAULT_STRANGER_BURST
    ephemeral_rate: float = DEFAULT_EPHEMERAL_RATE
    ephemeral_burst: float = DEFAULT_EPHEMERAL_BURST
    # Webhook push gateway (mailbox; docs/push.md); None: no pushes.
    push_webhook_url: str | None = None
    push_coalesce_s: float = DEFAULT_PUSH_COALESCE_S
    auth_rate: float = DEFAULT_AUTH_RATE
    auth_burst: float = DEFAULT_AUTH_BURST
    call_rate: float = DEFAULT_CALL_RATE
    call_burst: float = DEFAULT_CALL_BURST
    fetch_rate: float = DEFAULT_FETCH_RATE
    fetch_burst: float = DEFAULT_FETCH_BURST
    prekey_claim_rate: float = DEFAULT_PREKEY_CLAIM_RATE
    prekey_claim_burst: float = DEFAULT_PREKEY_CLAIM_BURST
    # Metadata key a trusted proxy sets to the client address (e.g.
    # "x-forwarded-for"); believed only from peers within ``trusted_proxies``
    # (CIDRs). Unset: the TCP peer is the client.
    # Replicas share what callers spent (xchat.core.sharedlimits, on each
    # service's own xchat.limits.<service>); off: per process (the fall-back).
    shared_limits: bool = True
    trusted_proxy_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    token_audience: str = DEFAULT_TOKEN_AUDIENCE
    # Further accepted token verification keys (rotation: a new key is added
    # everywhere before auth signs with it; the old one is removed after the
    # access-token lifetime).
    token_extra_public_keys: tuple[bytes, ...] = ()
    # Public keys of retired signing keys (auth): never accepted for tokens; the key
    # transparency directory names them for the epochs they sealed.
    token_retired_public_keys: tuple[bytes, ...] = ()
    # The files the keys above were read from, watched for changes (None: keys given in code, not reloaded).
    token_key_files: TokenKeyFiles | None = None
    token_key_reload_s: float = DEFAULT_TOKEN_KEY_RELOAD_S
    token_key_stream_end_s: float = DEFAULT_TOKEN_KEY_STREAM_END_S
    kt_epoch_interval_s: float = DEFAULT_KT_EPOCH_INTERVAL_S
    # Ed25519 public keys of the auditors whose statements auth keeps and serves (docs/key-transparency.md).
    kt_auditor_keys: tuple[bytes, ...] = ()
    services: tuple[str, ...] = field(default=SERVICE_NAMES)
    # Prometheus /metrics over plain HTTP (host:port; port 0 picks one). None:
    # no metrics port (the default, so tests and embedded servers open nothing).
    metrics_listen: str | None = None
    # nats-server monitoring URL (http://host:8222) from which the mailbox
    # backlog is sampled (xchat.core.metrics); None: no backlog gauges.
    nats_monitor_url: str | None = None


def _read_key_files(env: Mapping[str, str], values: dict[str, object]) -> None:
    """The token key files: their keys now (a bad file stops the start) and their paths (watched later)."""
    signing, public = env.get("XCHAT_TOKEN_SIGNING_KEY_FILE"), env.get("XCHAT_TOKEN_PUBLIC_KEY_FILE")
    extra = [Path(p) for p in (env.get("XCHAT_TOKEN_EXTRA_PUBLIC_KEY_FILES") or "").split(",") if p]
    retired = env.get("XCHAT_TOKEN_RETIRED_PUBLIC_KEYS_FILE")
    try:
        if signing:
            values["token_signing_seed"] = read_signing_seed(Path(signing))
        further: list[bytes] = []
        if public:
            first, *rest = read_key_file(Path(public), name="XCHAT_TOKEN_PUBLIC_KEY_FILE")
            values["token_public_key"] = first
            further += rest
        for path in extra:
            further += read_key_file(path, name="XCHAT_TOKEN_EXTRA_PUBLIC_KEY_FILES")
        if further:
            values["token_extra_public_keys"] = tuple(further)
        if retired:
            values["token_retired_public_keys"] = read_key_file(
                Path(retired), name="XCHAT_TOKEN_RETIRED_PUBLIC_KEYS_FILE", allow_empty=True
            )
    except KeyFileError as exc:
        raise SettingsError(str(exc)) from exc
    if signing or public or extra or retired:
        values["token_key_files"] = TokenKeyFiles(
            signing=Path(signing) if signing else None, public=Path(public) if public else None,
            extra=tuple(extra), retired=Path(retired) if retired else None,
        )


def _text(name: str, raw: str) -> object:
    return raw


def _integer(name: str, raw: str) -> object:
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not an integer") from exc


def _decimal(name: str, raw: str) -> object:
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a number") from exc


def _positive(parse: Callable[[str, str], object]) -> Callable[[str, str], object]:
    def positive(name: str, raw: str) -> object:
        value = parse(name, raw)
        assert isinstance(value, (int, float))
        if not value > 0:
            raise SettingsError(f"{name}={raw!r} must be greater than 0")
        return value

    return positive


def _non_negative(parse: Callable[[str, str], object]) -> Callable[[str, str], object]:
    def non_negative(name: str, raw: str) -> object:
        value = parse(name, raw)
        assert isinstance(value, (int, float))
        if value < 0:
            raise SettingsError(f"{name}={raw!r} must not be negative")
        return value

    return non_negative


def _flag(name: str, raw: str) -> object:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _list(name: str, raw: str) -> object:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _public_keys(name: str, raw: str) -> object:
    """Comma-separated base64 Ed25519 public keys (32 bytes each)."""
    keys = []
    for item in (p.strip() for p in raw.split(",") if p.strip()):
        try:
            key = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SettingsError(f"{name}: {item!r} is not base64") from exc
        if len(key) != 32:
            raise SettingsError(f"{name}: {item!r} holds {len(key)} bytes, expected a 32-byte Ed25519 public key")
        keys.append(key)
    return tuple(keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class Variable:
    """One ``XCHAT_*`` variable: what it sets, its default and why (docs/configuration.md is generated from these)."""

    name: str
    meaning: str
    group: str
    #: the ServiceSettings field set by ``parse(name, value)`` (the operator's table: a dotted
    #: path in its settings); None: read by :func:`from_env`'s own code (files, TLS) or by the
    #: CLI (logs), ``default`` then says what unset means
    field: str | None = None
    parse: Callable[[str, str], object] = _text
    default: object = None
    flag: str | None = None


REQUIRED, NETWORK, SECURITY, STORAGE, LIMITS, OBSERVABILITY = (
    "Required", "Network", "Tokens, TLS and callers", "Storage (applied by bootstrap)", "Rate limits", "Observability",
)

VARIABLES: tuple[Variable, ...] = (
    Variable(name="XCHAT_REGION", group=REQUIRED, field="region", default="", flag="--region",
             meaning="the region this process serves (NATS servers carry the tag region:<name>)"),
    Variable(name="XCHAT_TOKEN_SIGNING_KEY_FILE", group=REQUIRED, default=None,
             meaning="auth only: file with the base64 Ed25519 seed that signs access tokens (`xchat keygen`); re-read while running (XCHAT_TOKEN_KEY_RELOAD_S)"),
    Variable(name="XCHAT_TOKEN_PUBLIC_KEY_FILE", group=REQUIRED, default=None,
             meaning="every other service (and auth during a rotation): file with the accepted base64 public keys, one per line, the matching one among them; re-read while running (XCHAT_TOKEN_KEY_RELOAD_S)"),
    Variable(name="XCHAT_LISTEN", group=NETWORK, field="listen", default=DEFAULT_LISTEN, flag="--listen",
             meaning="gRPC address (host:port) of the application services"),
    Variable(name="XCHAT_HEALTH_LISTEN", group=NETWORK, field="health_listen", flag="--health-listen",
             meaning="plaintext grpc.health.v1-only address for kubelet probes (they cannot speak TLS); unset: health on the main port only"),
    Variable(name="XCHAT_NATS_URLS", group=NETWORK, field="nats_urls", parse=_list, default=(DEFAULT_NATS_URL,), flag="--nats",
             meaning="comma-separated NATS URLs, own region first"),
    Variable(name="XCHAT_NATS_USER", group=NETWORK, field="nats_user",
             meaning="the service's own least-privilege NATS user (`xchat.core.permissions`); unset: no authentication"),
    Variable(name="XCHAT_NATS_PASSWORD_FILE", group=NETWORK, default=None,
             meaning="file holding that user's NATS password"),
    Variable(name="XCHAT_TLS_CERT_FILE", group=SECURITY, default=None,
             meaning="PEM certificate of the gRPC server, also presented to NATS as client certificate; set with XCHAT_TLS_KEY_FILE; unset: plaintext"),
    Variable(name="XCHAT_TLS_KEY_FILE", group=SECURITY, default=None, meaning="PEM private key of that certificate"),
    Variable(name="XCHAT_TLS_CA_FILE", group=SECURITY, default=None,
             meaning="PEM CA that verifies the NATS servers' certificates; unset: the system CAs (for tls:// URLs)"),
    Variable(name="XCHAT_TOKEN_EXTRA_PUBLIC_KEY_FILES", group=SECURITY, default=None,
             meaning="comma-separated files of further accepted token keys, one or more per file (rotation: add the new key everywhere first, remove the old one after the access-token lifetime; docs/security.md)"),
    Variable(name="XCHAT_TOKEN_RETIRED_PUBLIC_KEYS_FILE", group=SECURITY, default=None,
             meaning="auth only: public keys of retired signing keys, one per line, possibly none: never accepted for tokens, named by the key transparency directory for the epochs they sealed"),
    Variable(name="XCHAT_TOKEN_KEY_RELOAD_S", group=SECURITY, field="token_key_reload_s", parse=_positive(_decimal),
             default=DEFAULT_TOKEN_KEY_RELOAD_S,
             meaning="seconds between reads of the token key files: a changed, valid set is used from the next call on; a bad file keeps the previous keys and logs one error"),
    Variable(name="XCHAT_TOKEN_KEY_STREAM_END_S", group=SECURITY, field="token_key_stream_end_s", parse=_non_negative(_decimal),
             default=DEFAULT_TOKEN_KEY_STREAM_END_S,
             meaning="mailbox: open Sync calls whose access token was signed by a key that is then dropped end (UNAUTHENTICATED) at a random moment within this many seconds, so online devices reconnect spread out; 0: at once"),
    Variable(name="XCHAT_TOKEN_AUDIENCE", group=SECURITY, field="token_audience", default=DEFAULT_TOKEN_AUDIENCE,
             meaning="audience of access tokens: a token minted for another deployment by the same key is refused"),
    Variable(name="XCHAT_ACCESS_TOKEN_LIFETIME_MS", group=SECURITY, field="access_token_lifetime_ms",
             parse=_positive(_integer), default=DEFAULT_ACCESS_TOKEN_LIFETIME_MS,
             meaning="milliseconds an access token is valid; tokens are verified offline, so revocation takes effect within this"),
    Variable(name="XCHAT_REFRESH_TOKEN_LIFETIME_S", group=SECURITY, field="refresh_token_lifetime_s",
             parse=_positive(_integer), default=DEFAULT_REFRESH_TOKEN_LIFETIME_S,
             meaning="seconds a refresh token is valid (also the TTL of the refresh-token bucket)"),
    Variable(name="XCHAT_TRUSTED_PROXY_HEADER", group=SECURITY, field="trusted_proxy_header",
             meaning="metadata key a trusted proxy sets to the client address (e.g. x-forwarded-for); unset: the TCP peer is the client"),
    Variable(name="XCHAT_TRUSTED_PROXIES", group=SECURITY, field="trusted_proxies", parse=_list, default=(),
             meaning="comma-separated CIDRs of the proxies whose header is believed"),
    Variable(name="XCHAT_REPLICAS", group=STORAGE, field="replicas", parse=_integer, default=DEFAULT_REPLICAS, flag="--replicas",
             meaning="JetStream replicas of every stream and bucket (1..5), one per region: an ack means a quorum of regions holds the write"),
    Variable(name="XCHAT_MAILBOX_QUOTA", group=STORAGE, field="mailbox_quota", parse=_integer, default=DEFAULT_MAILBOX_QUOTA,
             meaning="undelivered envelopes per device; sends beyond it fail with RESOURCE_EXHAUSTED"),
    Variable(name="XCHAT_MAILBOX_MAX_BYTES", group=STORAGE, field="mailbox_max_bytes", parse=_integer, default=DEFAULT_MAILBOX_MAX_BYTES,
             meaning="bytes the mailbox stream may hold, all devices together; reserved on every server holding a replica, so it must fit its max_file_store"),
    Variable(name="XCHAT_MAILBOX_TTL_S", group=STORAGE, field="mailbox_ttl_s", parse=_integer, default=DEFAULT_MAILBOX_TTL_S,
             meaning="seconds an undelivered envelope is kept (JetStream max_age)"),
    Variable(name="XCHAT_BUCKET_MAX_BYTES", group=STORAGE, field="bucket_max_bytes", parse=_integer, default=DEFAULT_BUCKET_MAX_BYTES,
             meaning="bytes each KV bucket may hold (the prekeys bucket four times this)"),
    Variable(name="XCHAT_DUPLICATE_WINDOW_S", group=STORAGE, field="duplicate_window_s",
             parse=_positive(_decimal), default=DEFAULT_DUPLICATE_WINDOW_S,
             meaning="seconds JetStream de-duplicates a resent message id; beyond it the recipient SDK de-duplicates"),
    Variable(name="XCHAT_MAX_CIPHERTEXT_BYTES", group=STORAGE, field="max_ciphertext_bytes",
             parse=_positive(_integer), default=DEFAULT_MAX_CIPHERTEXT_BYTES,
             meaning="largest end-to-end ciphertext relay accepts (the stream's max message size adds 4 KiB of headers)"),
    Variable(name="XCHAT_ATTACHMENT_MAX_BYTES", group=STORAGE, field="attachment_max_bytes",
             parse=_positive(_integer), default=DEFAULT_ATTACHMENT_MAX_BYTES,
             meaning="largest attachment (ciphertext bytes; the SDK adds 16 bytes per 64 KiB of file); larger uploads are INVALID_ARGUMENT"),
    Variable(name="XCHAT_ATTACHMENT_QUOTA_BYTES", group=STORAGE, field="attachment_quota_bytes",
             parse=_positive(_integer), default=DEFAULT_ATTACHMENT_QUOTA_BYTES,
             meaning="attachment bytes one account may hold until they expire; beyond it uploads are RESOURCE_EXHAUSTED"),
    Variable(name="XCHAT_ATTACHMENT_QUOTA_COUNT", group=STORAGE, field="attachment_quota_count",
             parse=_positive(_integer), default=DEFAULT_ATTACHMENT_QUOTA_COUNT,
             meaning="attachments one account may hold until they expire"),
    Variable(name="XCHAT_ATTACHMENT_TTL_S", group=STORAGE, field="attachment_ttl_s",
             parse=_positive(_integer), default=DEFAULT_ATTACHMENT_TTL_S,
             meaning="seconds an attachment is kept after its upload began (the bucket's max_age)"),
    Variable(name="XCHAT_ATTACHMENTS_MAX_BYTES", group=STORAGE, field="attachments_max_bytes",
             parse=_positive(_integer), default=DEFAULT_ATTACHMENTS_MAX_BYTES,
             meaning="bytes the attachment bucket may hold, all accounts together; reserved on every server holding a replica, so it must fit its max_file_store beside the mailbox stream"),
    Variable(name="XCHAT_KT_EPOCH_INTERVAL_S", group=SECURITY, field="kt_epoch_interval_s",
             parse=_positive(_decimal), default=DEFAULT_KT_EPOCH_INTERVAL_S,
             meaning="auth: seconds between key transparency epochs at most (sealed only when a device list changed)"),
    Variable(name="XCHAT_KT_AUDITOR_KEYS", group=SECURITY, field="kt_auditor_keys", parse=_public_keys, default=(),
             meaning="auth: comma-separated base64 Ed25519 public keys of the auditors whose signed statements it keeps and serves to clients that require an auditor (`xchat audit --publish`); unset: none accepted"),
    Variable(name="XCHAT_STORE_TIMEOUT_S", group=NETWORK, field="store_timeout_s",
             parse=_positive(_decimal), default=DEFAULT_STORE_TIMEOUT_S,
             meaning="seconds a store operation may take before the call fails with UNAVAILABLE"),
    Variable(name="XCHAT_SEND_RATE", group=LIMITS, field="send_rate", parse=_decimal, default=DEFAULT_SEND_RATE,
             meaning="envelopes per second per device per process (Send, SendStream)"),
    Variable(name="XCHAT_SEND_BURST", group=LIMITS, field="send_burst", parse=_decimal, default=DEFAULT_SEND_BURST,
             meaning="burst of those envelopes"),
    Variable(name="XCHAT_STRANGER_RATE", group=LIMITS, field="stranger_rate", parse=_decimal, default=DEFAULT_STRANGER_RATE,
             meaning="sealed envelopes without a valid delivery key per second per recipient device that accepts sealed sends from anyone, and per sender address"),
    Variable(name="XCHAT_STRANGER_BURST", group=LIMITS, field="stranger_burst", parse=_decimal, default=DEFAULT_STRANGER_BURST,
             meaning="burst of those envelopes"),
    Variable(name="XCHAT_EPHEMERAL_RATE", group=LIMITS, field="ephemeral_rate", parse=_decimal,
             default=DEFAULT_EPHEMERAL_RATE,
             meaning="ephemeral signals (typing, presence) per second per sender device, and per recipient device"),
    Variable(name="XCHAT_EPHEMERAL_BURST", group=LIMITS, field="ephemeral_burst", parse=_decimal,
             default=DEFAULT_EPHEMERAL_BURST, meaning="burst of those signals"),
    Variable(name="XCHAT_PUSH_WEBHOOK_URL", group=NETWORK, field="push_webhook_url",
             meaning="mailbox: http(s) URL of the push gateway, POSTed a content-free wake-up for devices with a push token and no open Sync (docs/push.md); unset: no pushes"),
    Variable(name="XCHAT_PUSH_COALESCE_S", group=LIMITS, field="push_coalesce_s", parse=_positive(_decimal),
             default=DEFAULT_PUSH_COALESCE_S,
             meaning="mailbox: at most one push per device per this many seconds, however many envelopes land"),
    Variable(name="XCHAT_AUTH_RATE", group=LIMITS, field="auth_rate", parse=_decimal, default=DEFAULT_AUTH_RATE,
             meaning="unauthenticated calls (Register, Challenge, Login, Refresh) per second per caller address"),
    Variable(name="XCHAT_AUTH_BURST", group=LIMITS, field="auth_burst", parse=_decimal, default=DEFAULT_AUTH_BURST,
             meaning="burst of those calls"),
    Variable(name="XCHAT_CALL_RATE", group=LIMITS, field="call_rate", parse=_decimal, default=DEFAULT_CALL_RATE,
             meaning="other authenticated calls per second per device"),
    Variable(name="XCHAT_CALL_BURST", group=LIMITS, field="call_burst", parse=_decimal, default=DEFAULT_CALL_BURST,
             meaning="burst of those calls"),
    Variable(name="XCHAT_FETCH_RATE", group=LIMITS, field="fetch_rate", parse=_decimal, default=DEFAULT_FETCH_RATE,
             meaning="prekey bundle fetches per second per device"),
    Variable(name="XCHAT_FETCH_BURST", group=LIMITS, field="fetch_burst", parse=_decimal, default=DEFAULT_FETCH_BURST,
             meaning="burst of those fetches"),
    Variable(name="XCHAT_PREKEY_CLAIM_RATE", group=LIMITS, field="prekey_claim_rate", parse=_decimal, default=DEFAULT_PREKEY_CLAIM_RATE,
             meaning="one-time prekeys handed out per second per target account and per fetching device; beyond it bundles come without one"),
    Variable(name="XCHAT_PREKEY_CLAIM_BURST", group=LIMITS, field="prekey_claim_burst", parse=_decimal, default=DEFAULT_PREKEY_CLAIM_BURST,
             meaning="burst of those prekeys"),
    Variable(name="XCHAT_SHARED_LIMITS", group=LIMITS, field="shared_limits", parse=_flag, default=True,
             meaning="1/true (default): replicas share what callers spent on core NATS (xchat.core.sharedlimits); 0: limits are per process"),
    Variable(name="XCHAT_METRICS_LISTEN", group=OBSERVABILITY, field="metrics_listen", flag="--metrics-listen",
             meaning="Prometheus /metrics address over plain HTTP (port 0 picks one); unset: no metrics port"),
    Variable(name="XCHAT_NATS_MONITOR_URL", group=OBSERVABILITY, field="nats_monitor_url",
             meaning="nats-server monitoring URL (http://host:8222) the mailbox backlog gauges are sampled from; unset: no backlog gauges"),
    Variable(name="XCHAT_LOG_FORMAT", group=OBSERVABILITY, default="text", flag="--log-format",
             meaning="text, or json (one object per line with the call's request id); read by the CLI"),
    Variable(name="XCHAT_LOG_LEVEL", group=OBSERVABILITY, default="info", flag="--log-level",
             meaning="debug (adds one access line per call), info (default of serve), warning (default of other commands), error; read by the CLI"),
)


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> ServiceSettings:
    """Builds settings from ``XCHAT_*`` variables (:data:`VARIABLES`); explicit overrides (CLI flags) win."""
    env = dict(os.environ if env is None else env)
    values: dict[str, object] = {}
    for var in VARIABLES:
        raw = env.get(var.name)
        if var.field is not None:
            values[var.field] = var.default if raw is None or raw == "" else var.parse(var.name, raw)
    if password_file := env.get("XCHAT_NATS_PASSWORD_FILE"):
        try:
            values["nats_password"] = Path(password_file).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"XCHAT_NATS_PASSWORD_FILE: cannot read {password_file}") from exc
    _read_key_files(env, values)
    cert, key, ca = (env.get(f"XCHAT_TLS_{n}_FILE") for n in ("CERT", "KEY", "CA"))
    if cert or key:
        if not (cert and key):
            raise SettingsError("XCHAT_TLS_CERT_FILE and XCHAT_TLS_KEY_FILE must be set together")
        values["tls"] = TlsFiles(cert=Path(cert), key=Path(key), ca=Path(ca) if ca else None)
    if ca:
        values["nats_ca"] = Path(ca)
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = ServiceSettings(**values)  # type: ignore[arg-type]
    validate(settings)
    return settings


def validate(settings: ServiceSettings) -> None:
    if not settings.region:
        raise SettingsError("region is not set: pass --region or XCHAT_REGION")
    if not settings.nats_urls:
        raise SettingsError("no NATS URL: pass --nats or XCHAT_NATS_URLS")
    if not 1 <= settings.replicas <= 5:
        raise SettingsError(f"replicas={settings.replicas}: JetStream supports 1..5")
    unknown = set(settings.services) - set(SERVICE_NAMES)
    if unknown:
        raise SettingsError(f"unknown service(s) {sorted(unknown)}; choose from {list(SERVICE_NAMES)}")
    if "auth" in settings.services and settings.token_signing_seed is None:
        raise SettingsError("auth needs a token signing key: set XCHAT_TOKEN_SIGNING_KEY_FILE")
    for network in settings.trusted_proxies:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            raise SettingsError(f"trusted proxy {network!r} is not an IP network (CIDR)") from exc
    if settings.trusted_proxy_header and not settings.trusted_proxies:
        raise SettingsError("XCHAT_TRUSTED_PROXY_HEADER needs XCHAT_TRUSTED_PROXIES: the proxies whose header is believed")
    if settings.token_signing_seed is None and settings.token_public_key is None:
        raise SettingsError("a token public key is needed to verify callers: set XCHAT_TOKEN_PUBLIC_KEY_FILE")

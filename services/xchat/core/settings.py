"""Process settings: loaded once at the edge (CLI flags and ``XCHAT_*`` env), frozen, passed down.

Nothing below ``xchat.cli`` reads the environment.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

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
# fit that server's max_file_store (2 GB in the local mesh).
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
# Per device, per relay process: envelopes per second and burst. Generous for
# people, tight enough that one device cannot monopolise a region.
DEFAULT_SEND_RATE = 500.0
DEFAULT_SEND_BURST = 5000.0
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
    send_rate: float = DEFAULT_SEND_RATE
    send_burst: float = DEFAULT_SEND_BURST
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
    # Replicas share what callers spent (xchat.core.sharedlimits); off: per
    # process. Opt-in until the NATS users are granted its subject.
    shared_limits: bool = False
    trusted_proxy_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    token_audience: str = DEFAULT_TOKEN_AUDIENCE
    # Further accepted token verification keys (rotation: a new key is added
    # everywhere before auth signs with it; the old one is removed after the
    # access-token lifetime).
    token_extra_public_keys: tuple[bytes, ...] = ()
    services: tuple[str, ...] = field(default=SERVICE_NAMES)
    # Prometheus /metrics over plain HTTP (host:port; port 0 picks one). None:
    # no metrics port (the default, so tests and embedded servers open nothing).
    metrics_listen: str | None = None
    # nats-server monitoring URL (http://host:8222) from which the mailbox
    # backlog is sampled (xchat.core.metrics); None: no backlog gauges.
    nats_monitor_url: str | None = None


def _read_key_file(path: str, name: str) -> bytes:
    try:
        raw = Path(path).read_text().strip()
        key = base64.b64decode(raw, validate=True)
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {path}: {exc.strerror}") from exc
    except (binascii.Error, ValueError) as exc:
        raise SettingsError(f"{name}: {path} must hold a base64-encoded 32-byte key") from exc
    if len(key) != 32:
        raise SettingsError(f"{name}: {path} holds {len(key)} bytes, expected 32")
    return key


N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, default: N) -> N:
    """``env[name]`` parsed as the type of ``default``; the default when unset or empty."""
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return type(default)(value)
    except ValueError as exc:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise SettingsError(f"{name}={value!r} is not {kind}") from exc


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> ServiceSettings:
    """Builds settings from ``XCHAT_*`` variables; explicit overrides (CLI flags) win."""
    env = dict(os.environ if env is None else env)
    values: dict[str, object] = {
        "region": env.get("XCHAT_REGION", ""),
        "listen": env.get("XCHAT_LISTEN", DEFAULT_LISTEN),
        "health_listen": env.get("XCHAT_HEALTH_LISTEN") or None,
        "nats_urls": tuple(u for u in env.get("XCHAT_NATS_URLS", DEFAULT_NATS_URL).split(",") if u),
        "nats_user": env.get("XCHAT_NATS_USER") or None,
        "replicas": _number(env, "XCHAT_REPLICAS", DEFAULT_REPLICAS),
        "mailbox_quota": _number(env, "XCHAT_MAILBOX_QUOTA", DEFAULT_MAILBOX_QUOTA),
        "mailbox_max_bytes": _number(env, "XCHAT_MAILBOX_MAX_BYTES", DEFAULT_MAILBOX_MAX_BYTES),
        "bucket_max_bytes": _number(env, "XCHAT_BUCKET_MAX_BYTES", DEFAULT_BUCKET_MAX_BYTES),
        "mailbox_ttl_s": _number(env, "XCHAT_MAILBOX_TTL_S", DEFAULT_MAILBOX_TTL_S),
        "send_rate": _number(env, "XCHAT_SEND_RATE", DEFAULT_SEND_RATE),
        "send_burst": _number(env, "XCHAT_SEND_BURST", DEFAULT_SEND_BURST),
        "auth_rate": _number(env, "XCHAT_AUTH_RATE", DEFAULT_AUTH_RATE),
        "auth_burst": _number(env, "XCHAT_AUTH_BURST", DEFAULT_AUTH_BURST),
        "call_rate": _number(env, "XCHAT_CALL_RATE", DEFAULT_CALL_RATE),
        "call_burst": _number(env, "XCHAT_CALL_BURST", DEFAULT_CALL_BURST),
        "fetch_rate": _number(env, "XCHAT_FETCH_RATE", DEFAULT_FETCH_RATE),
        "fetch_burst": _number(env, "XCHAT_FETCH_BURST", DEFAULT_FETCH_BURST),
        "prekey_claim_rate": _number(env, "XCHAT_PREKEY_CLAIM_RATE", DEFAULT_PREKEY_CLAIM_RATE),
        "prekey_claim_burst": _number(env, "XCHAT_PREKEY_CLAIM_BURST", DEFAULT_PREKEY_CLAIM_BURST),
        "shared_limits": env.get("XCHAT_SHARED_LIMITS", "").strip().lower() in ("1", "true", "yes", "on"),
        "trusted_proxy_header": env.get("XCHAT_TRUSTED_PROXY_HEADER") or None,
        "trusted_proxies": tuple(p.strip() for p in env.get("XCHAT_TRUSTED_PROXIES", "").split(",") if p.strip()),
        "token_audience": env.get("XCHAT_TOKEN_AUDIENCE") or DEFAULT_TOKEN_AUDIENCE,
        "metrics_listen": env.get("XCHAT_METRICS_LISTEN") or None,
        "nats_monitor_url": env.get("XCHAT_NATS_MONITOR_URL") or None,
    }
    if password_file := env.get("XCHAT_NATS_PASSWORD_FILE"):
        try:
            values["nats_password"] = Path(password_file).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"XCHAT_NATS_PASSWORD_FILE: cannot read {password_file}") from exc
    if signing := env.get("XCHAT_TOKEN_SIGNING_KEY_FILE"):
        values["token_signing_seed"] = _read_key_file(signing, "XCHAT_TOKEN_SIGNING_KEY_FILE")
    if public := env.get("XCHAT_TOKEN_PUBLIC_KEY_FILE"):
        values["token_public_key"] = _read_key_file(public, "XCHAT_TOKEN_PUBLIC_KEY_FILE")
    if extra := env.get("XCHAT_TOKEN_EXTRA_PUBLIC_KEY_FILES"):
        values["token_extra_public_keys"] = tuple(
            _read_key_file(path, "XCHAT_TOKEN_EXTRA_PUBLIC_KEY_FILES") for path in extra.split(",") if path
        )
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

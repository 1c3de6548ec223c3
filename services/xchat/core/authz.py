"""Authorisation of a caller: a valid access token of a device that is still active.

A token's signature and expiry prove only who the caller was when the token
was issued. Every authenticated RPC also needs the device to be active now:
registered, not revoked, and of the account the token names. The
``Authorizer`` checks both; ``xchat.core.edge`` calls it once per RPC for every
method not in its anonymous list, before the servicer runs, and leaves the
result in a context variable that ``current_principal`` reads (each gRPC call
runs in its own task, so the value never leaks between calls).

Freshness: device records are cached for ``xchat.core.devices.CACHE_TTL_S``
(2 s), so a revocation takes effect for ordinary calls on every replica within
2 s. Account-changing calls (add or revoke a device) read the record from the
store (``fresh=True``): a device revoked a moment ago cannot use its
still-valid token to revoke or add devices.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence

import nacl.signing

from xchat.core.devices import DeviceDirectory
from xchat.core.errors import Unauthenticated
from xchat.core.settings import ServiceSettings
from xchat.core.tokenkeys import TokenKeys, combine
from xchat.core.tokens import Principal, TokenSigner, TokenVerifier

_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("xchat_principal", default=None)
# The rate-limit key of an anonymous caller's address (proxy-aware, IPv6 by /64), bound by the edge.
_CLIENT_ADDRESS: contextvars.ContextVar[str] = contextvars.ContextVar("xchat_client_address", default="unknown")

Metadata = Sequence[tuple[str, str | bytes]]


def bearer_token(metadata: Metadata) -> str:
    """The access token of ``authorization: Bearer <token>`` metadata."""
    for key, value in metadata:
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization metadata must be 'Bearer <access token>'")
            return token.strip()
    raise Unauthenticated("missing access token: send 'authorization: Bearer <token>' metadata (log in first)")


def token_verifier(settings: ServiceSettings) -> TokenVerifier:
    """Every accepted verification key (the signing key's own public key first) and the audience."""
    if settings.token_public_key is not None:
        key = nacl.signing.VerifyKey(settings.token_public_key)
    else:
        assert settings.token_signing_seed is not None  # settings.validate guarantees one of them
        key = nacl.signing.SigningKey(settings.token_signing_seed).verify_key
    extra = [nacl.signing.VerifyKey(k) for k in settings.token_extra_public_keys]
    if settings.token_signing_seed is not None:
        extra.append(nacl.signing.SigningKey(settings.token_signing_seed).verify_key)
    return TokenVerifier(verify_key=key, extra_keys=extra, audience=settings.token_audience)


def token_keys(settings: ServiceSettings) -> TokenKeys:
    """The keys the settings were started with, in the form the key-file watcher compares and applies."""
    files = ([settings.token_public_key] if settings.token_public_key is not None else []) + list(
        settings.token_extra_public_keys
    )
    return combine(settings.token_signing_seed, files, settings.token_retired_public_keys)


def token_signer(settings: ServiceSettings) -> TokenSigner:
    assert settings.token_signing_seed is not None  # settings.validate: auth has a signing key
    return TokenSigner(
        signing_key=nacl.signing.SigningKey(settings.token_signing_seed),
        lifetime_ms=settings.access_token_lifetime_ms,
        audience=settings.token_audience,
    )


class Authorizer:
    def __init__(self, verifier: TokenVerifier, devices: DeviceDirectory) -> None:
        self._verifier = verifier
        self._devices = devices

    def authenticate(self, metadata: Metadata) -> Principal:
        """Offline: the token's signature, audience and expiry (no store access)."""
        return self._verifier.verify(bearer_token(metadata))

    async def check_active(self, principal: Principal, *, fresh: bool = False) -> None:
        """Raises UNAUTHENTICATED unless the principal's device is active in its account.

        ``fresh`` reads the store instead of the (2 s) cache; long-lived streams
        call this again at the cache bound to notice a revocation.
        """
        if fresh:
            record, _ = await self._devices.get(principal.device)
        else:
            record = await self._devices.cached(principal.device)
        if record is None or record.account != principal.account:
            raise Unauthenticated(f"device {principal.device} is not a device of account {principal.account!r}")
        if record.revoked:
            raise Unauthenticated(f"device {principal.device} has been revoked; register it again")

    async def authorize(self, metadata: Metadata, *, fresh: bool = False) -> Principal:
        principal = self.authenticate(metadata)
        await self.check_active(principal, fresh=fresh)
        return principal


def bind_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _PRINCIPAL.set(principal)


def bind_client_address(key: str) -> None:
    """Set by the edge for anonymous calls (``xchat.core.addresses``): servicers limit by it."""
    _CLIENT_ADDRESS.set(key)


def current_client_address() -> str:
    """The running anonymous call's client address key ("unknown" outside one)."""
    return _CLIENT_ADDRESS.get()


def current_principal() -> Principal | None:
    """The caller the edge authorised for the running RPC (None on anonymous methods)."""
    return _PRINCIPAL.get()


def require_principal() -> Principal:
    principal = _PRINCIPAL.get()
    if principal is None:
        # The edge authorises every non-anonymous method; reaching here means a
        # servicer method is missing from its policy table.
        raise Unauthenticated("this call needs an access token")
    return principal

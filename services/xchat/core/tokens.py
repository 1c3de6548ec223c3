"""Short-lived access tokens: signed by auth with Ed25519, verified offline everywhere.

Format: ``v1.<base64url(json claims)>.<base64url(signature over "v1." + claims part)>``.
Claims: ``a`` account, ``d`` device, ``iat``/``exp`` in ms since the epoch.
Offline verification means a revoked device keeps working until its token
expires, which is why access tokens live minutes, not hours.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from xchat.core.errors import Unauthenticated
from xchat.core.ids import AccountId, DeviceId

TOKEN_VERSION = "v1"
MAX_TOKEN_CHARS = 1024
# Tolerated clock difference between the auth region and the verifying region.
CLOCK_SKEW_MS = 30_000


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of an RPC."""

    account: AccountId
    device: DeviceId
    expires_at_ms: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, *, signing_key: nacl.signing.SigningKey, lifetime_ms: int) -> None:
        self._key = signing_key
        self._lifetime_ms = lifetime_ms

    def issue(self, account: AccountId, device: DeviceId, *, now_ms: int | None = None) -> tuple[str, int]:
        issued = now_ms if now_ms is not None else int(time.time() * 1000)
        expires = issued + self._lifetime_ms
        claims = json.dumps({"a": account, "d": device, "iat": issued, "exp": expires}, separators=(",", ":"))
        signed_part = f"{TOKEN_VERSION}.{_b64(claims.encode())}"
        signature = self._key.sign(signed_part.encode()).signature
        return f"{signed_part}.{_b64(signature)}", expires


class TokenVerifier:
    def __init__(self, *, verify_key: nacl.signing.VerifyKey) -> None:
        self._key = verify_key

    def verify(self, token: str, *, now_ms: int | None = None) -> Principal:
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("access token is too long")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_VERSION:
            raise Unauthenticated("access token is malformed: expected v1.<claims>.<signature>")
        try:
            signature = _unb64(parts[2])
            self._key.verify(f"{parts[0]}.{parts[1]}".encode(), signature)
            claims = json.loads(_unb64(parts[1]))
            principal = Principal(
                account=AccountId(str(claims["a"])),
                device=DeviceId(str(claims["d"])),
                expires_at_ms=int(claims["exp"]),
            )
        except nacl.exceptions.BadSignatureError as exc:
            raise Unauthenticated("access token signature is invalid") from exc
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise Unauthenticated("access token is malformed") from exc
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        if principal.expires_at_ms + CLOCK_SKEW_MS < now:
            raise Unauthenticated("access token has expired: refresh it or log in again")
        return principal

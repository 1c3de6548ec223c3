"""Short-lived access tokens: signed by auth with Ed25519, verified offline everywhere.

Format: ``v1.<base64url(json claims)>.<base64url(signature over "v1." + claims part)>``,
base64url without padding, decoded strictly (only the canonical encoding of
the bytes is accepted, so no two strings carry the same signature).
Claims: ``a`` account, ``d`` device, ``iat``/``exp`` in ms since the epoch,
``aud`` the deployment's audience, ``kid`` the signing key's id
(``key_id``: 16 hex digits of SHA-256 of the public key).

Rotation without downtime: verifiers hold several public keys, selected by
``kid``. Add the new public key to every verifier, then let auth sign with
the new key, then (after one access-token lifetime) drop the old key. The
keys of a running signer and verifier are replaced in one assignment
(``replace_key``, ``replace_keys``; ``xchat.core.tokenkeys`` watches the files),
and a verifier forgets every token it remembered when its keys change, so a
token of a dropped key is refused by its very next call.

The signature and expiry say who the caller was when the token was issued;
whether that device is still active is ``xchat.core.authz``'s question.

A verifier remembers the last ``VERIFIED_CACHE_MAX`` tokens it accepted (a
256-bit BLAKE2b digest of the exact string → its principal; ≈ 0.35 KiB each,
half of keeping the string): an app makes many calls with one token, and
an Ed25519 verification plus the decoding cost ≈ 70 µs per call, a large part
of a one-message unary Send (issue 18). Only the signature and claims checks
are skipped on a hit, never the expiry; a string that differs by one
character is another key and is verified in full; refused tokens are never
remembered, so garbage cannot fill the cache.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

from xchat.core.errors import Unauthenticated
from xchat.core.ids import AccountId, DeviceId

TOKEN_VERSION = "v1"
MAX_TOKEN_CHARS = 1024
# Tolerated clock difference between the auth region and the verifying region.
CLOCK_SKEW_MS = 30_000
DEFAULT_AUDIENCE = "xchat"
# Accepted tokens remembered per verifier (≈ 0.35 KiB each: a digest and a principal).
VERIFIED_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of an RPC."""

    account: AccountId
    device: DeviceId
    expires_at_ms: int
    # The key that signed the token (not part of who the caller is): a long call opened with it
    # ends when that key is dropped (``xchat.mailbox.service``).
    key_id: str = field(default="", compare=False)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _unb64(text: str) -> bytes:
    """Strict base64url: the alphabet only, no padding, and only the canonical encoding."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not canonical base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # non-zero trailing bits: another string for the same bytes
        raise ValueError("not canonical base64url")
    return data


def key_id(verify_key: nacl.signing.VerifyKey) -> str:
    return hashlib.sha256(bytes(verify_key)).hexdigest()[:16]


class TokenSigner:
    def __init__(self, *, signing_key: nacl.signing.SigningKey, lifetime_ms: int, audience: str = DEFAULT_AUDIENCE) -> None:
        # Key and id together, replaced in one assignment: a token never names another key than it was signed with.
        self._key = (signing_key, key_id(signing_key.verify_key))
        self._lifetime_ms = lifetime_ms
        self._audience = audience

    @property
    def kid(self) -> str:
        return self._key[1]

    def replace_key(self, signing_key: nacl.signing.SigningKey) -> None:
        """Sign every later token with ``signing_key`` (a rotation's switch)."""
        self._key = (signing_key, key_id(signing_key.verify_key))

    def issue(self, account: AccountId, device: DeviceId, *, now_ms: int | None = None) -> tuple[str, int]:
        key, kid = self._key
        issued = now_ms if now_ms is not None else int(time.time() * 1000)
        expires = issued + self._lifetime_ms
        claims = json.dumps(
            {"a": account, "d": device, "iat": issued, "exp": expires, "aud": self._audience, "kid": kid},
            separators=(",", ":"),
        )
        signed_part = f"{TOKEN_VERSION}.{_b64(claims.encode())}"
        signature = key.sign(signed_part.encode()).signature
        return f"{signed_part}.{_b64(signature)}", expires


class TokenVerifier:
    """Accepts tokens signed by any of ``verify_keys`` (chosen by ``kid``) for ``audience``."""

    def __init__(
        self,
        *,
        verify_key: nacl.signing.VerifyKey,
        extra_keys: Iterable[nacl.signing.VerifyKey] = (),
        audience: str = DEFAULT_AUDIENCE,
    ) -> None:
        self._keys = {key_id(k): k for k in (verify_key, *extra_keys)}
        self._audience = audience
        # Digest of an accepted token string -> its principal, oldest first (bounded by VERIFIED_CACHE_MAX).
        self._verified: dict[bytes, Principal] = {}

    @property
    def kids(self) -> tuple[str, ...]:
        """Ids of the accepted keys."""
        return tuple(self._keys)

    def replace_keys(self, keys: Iterable[nacl.signing.VerifyKey]) -> None:
        """Accept exactly ``keys`` from now on (at least one).

        The remembered tokens go too, whatever changed: the cache skips the
        signature check, so a token of a dropped key must not survive in it.
        """
        accepted = {key_id(k): k for k in keys}
        if not accepted:
            raise ValueError("a verifier needs at least one key")
        self._keys = accepted
        self._verified = {}

    def verify(self, token: str, *, now_ms: int | None = None) -> Principal:
        # Only a second string with the same 256-bit digest could hit another's entry:
        # the digest saves memory (a quarter of the string's), not a check.
        digest = hashlib.blake2b(token.encode(), digest_size=32).digest()
        principal = self._verified.get(digest)
        if principal is None:
            principal = self._verify_signed(token)
            if len(self._verified) >= VERIFIED_CACHE_MAX:
                del self._verified[next(iter(self._verified))]
            self._verified[digest] = principal
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        if principal.expires_at_ms + CLOCK_SKEW_MS < now:
            raise Unauthenticated("access token has expired: refresh it or log in again")
        return principal

    def _verify_signed(self, token: str) -> Principal:
        """The token's principal once its form, key, signature, audience and claims check out (not its expiry)."""
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("access token is too long")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_VERSION:
            raise Unauthenticated("access token is malformed: expected v1.<claims>.<signature>")
        try:
            signature = _unb64(parts[2])
            # Read before the signature is checked only to choose the key.
            claims = json.loads(_unb64(parts[1]))
            if not isinstance(claims, dict):
                raise TypeError("claims are not an object")
            key = self._keys.get(str(claims.get("kid")))
            if key is None:
                raise Unauthenticated("access token is signed by an unknown key: log in again")
            key.verify(f"{parts[0]}.{parts[1]}".encode(), signature)
            if claims.get("aud") != self._audience:
                raise Unauthenticated("access token is for another audience")
            if not all(isinstance(claims.get(k), str) for k in ("a", "d")) or type(claims.get("exp")) is not int:
                raise TypeError("claims have the wrong types")
            principal = Principal(
                account=AccountId(claims["a"]),
                device=DeviceId(claims["d"]),
                expires_at_ms=claims["exp"],
                key_id=str(claims["kid"]),
            )
        except nacl.exceptions.BadSignatureError as exc:
            raise Unauthenticated("access token signature is invalid") from exc
        # RecursionError: deeply nested JSON claims (a 1 KiB token holds ~760
        # levels) exhaust the interpreter's stack when verified under deep frames.
        except (binascii.Error, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise Unauthenticated("access token is malformed") from exc
        return principal

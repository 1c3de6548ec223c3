"""The verifier's cache of accepted tokens: a hit skips the signature check, never the expiry,
and only the exact string that was verified hits (in memory, no network)."""

from __future__ import annotations

import nacl.signing
import pytest

from xchat.core import tokens
from xchat.core.errors import Unauthenticated
from xchat.core.ids import AccountId, DeviceId
from xchat.core.tokens import CLOCK_SKEW_MS, TokenSigner, TokenVerifier

DEVICE = DeviceId("0" * 32)


def _signed(key: nacl.signing.SigningKey, *, now_ms: int = 1_000, account: str = "alice") -> tuple[str, int]:
    return TokenSigner(signing_key=key, lifetime_ms=60_000).issue(AccountId(account), DEVICE, now_ms=now_ms)


def _tamper(token: str) -> str:
    """The same claims under a signature with its last character changed."""
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


def test_a_cached_token_is_refused_once_expired() -> None:
    key = nacl.signing.SigningKey.generate()
    token, expires = _signed(key)
    verifier = TokenVerifier(verify_key=key.verify_key)
    assert verifier.verify(token, now_ms=2_000).account == "alice"  # now cached
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(token, now_ms=expires + CLOCK_SKEW_MS + 1)


def test_a_token_that_differs_from_a_cached_one_is_verified_in_full() -> None:
    key = nacl.signing.SigningKey.generate()
    token, _ = _signed(key)
    verifier = TokenVerifier(verify_key=key.verify_key)
    verifier.verify(token, now_ms=2_000)
    with pytest.raises(Unauthenticated):
        verifier.verify(_tamper(token), now_ms=2_000)
    # Claims of another account spliced in front of the cached token's signature.
    other, _ = _signed(key, account="mallory")
    spliced = ".".join(other.split(".")[:2] + token.split(".")[2:])
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.verify(spliced, now_ms=2_000)


def test_refused_tokens_are_not_remembered_and_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "VERIFIED_CACHE_MAX", 8)
    key = nacl.signing.SigningKey.generate()
    stranger = nacl.signing.SigningKey.generate()
    verifier = TokenVerifier(verify_key=key.verify_key)
    forged, _ = _signed(stranger)
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            verifier.verify(forged, now_ms=2_000)
    assert len(verifier._verified) == 0
    for i in range(20):
        verifier.verify(_signed(key, now_ms=1_000 + i)[0], now_ms=2_000)
    assert len(verifier._verified) == 8

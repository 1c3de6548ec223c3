"""Unit tests of core pieces that need no network: rate limits, tokens, settings, ids."""

from __future__ import annotations

import base64
from pathlib import Path

import nacl.signing
import pytest

from xchat.core.errors import InvalidArgument, ResourceExhausted, Unauthenticated
from xchat.core.ids import AccountId, DeviceId, account_id, device_id, message_id
from xchat.core.ratelimit import Rate, RateLimiter
from xchat.core.settings import SettingsError, from_env
from xchat.core.tokens import TokenSigner, TokenVerifier, key_id


def test_token_bucket_allows_burst_then_refills() -> None:
    limiter = RateLimiter(Rate(per_second=10, burst=5), what="envelopes")
    for _ in range(5):
        limiter.take("dev", now=100.0)
    with pytest.raises(ResourceExhausted, match="at most 10 envelopes/s"):
        limiter.take("dev", now=100.0)
    limiter.take("other", now=100.0)  # keys are independent
    limiter.take("dev", now=100.2)  # 0.2 s refills two tokens
    with pytest.raises(ResourceExhausted):
        limiter.take("dev", cost=3, now=100.2)


def test_limiter_key_table_is_bounded() -> None:
    limiter = RateLimiter(Rate(1, 1), what="calls", max_keys=3)
    for key in "abcd":
        limiter.take(key, now=0.0)
    limiter.take("a", now=0.0)  # "a" was evicted, so it starts with a full bucket again
    assert len(limiter._buckets) == 3


def test_tokens_round_trip_and_refuse_tampering() -> None:
    key = nacl.signing.SigningKey.generate()
    token, expires = TokenSigner(signing_key=key, lifetime_ms=60_000).issue(AccountId("alice"), DeviceId("0" * 32), now_ms=1_000)
    verifier = TokenVerifier(verify_key=key.verify_key)
    principal = verifier.verify(token, now_ms=2_000)
    assert (principal.account, principal.device, principal.expires_at_ms) == ("alice", "0" * 32, expires)
    head, claims, sig = token.split(".")
    kid = key_id(key.verify_key).encode()
    forged_claims = base64.urlsafe_b64encode(
        b'{"a":"mallory","d":"' + b"0" * 32 + b'","iat":1,"exp":99999999999999,"aud":"xchat","kid":"' + kid + b'"}'
    ).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.verify(f"{head}.{forged_claims}.{sig}", now_ms=2_000)
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(token, now_ms=10_000_000)
    for junk in ("", "v2.a.b", "v1.only-two", "v1.!!.??", "x" * 5000):
        with pytest.raises(Unauthenticated):
            verifier.verify(junk, now_ms=2_000)


def test_identifier_validation_messages() -> None:
    assert account_id("alice.b-c_d") == "alice.b-c_d"
    for bad in ("", "ab", "Alice", "-lead", "x" * 33, "a b"):
        with pytest.raises(InvalidArgument, match="account"):
            account_id(bad)
    with pytest.raises(InvalidArgument, match="32 lowercase hex"):
        device_id("ABCDEF" * 6)
    with pytest.raises(InvalidArgument, match="16 bytes"):
        message_id(b"123")


def test_settings_from_env_and_their_errors(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.write_text(base64.b64encode(bytes(32)).decode())
    settings = from_env({"XCHAT_REGION": "a", "XCHAT_TOKEN_SIGNING_KEY_FILE": str(seed), "XCHAT_NATS_URLS": "nats://x:1,nats://y:2"})
    assert settings.nats_urls == ("nats://x:1", "nats://y:2") and settings.replicas == 3
    with pytest.raises(SettingsError, match="region is not set"):
        from_env({"XCHAT_TOKEN_SIGNING_KEY_FILE": str(seed)})
    with pytest.raises(SettingsError, match="signing key"):
        from_env({"XCHAT_REGION": "a"})
    with pytest.raises(SettingsError, match="not an integer"):
        from_env({"XCHAT_REGION": "a", "XCHAT_TOKEN_SIGNING_KEY_FILE": str(seed), "XCHAT_REPLICAS": "three"})
    bad = tmp_path / "bad"
    bad.write_text("not base64!")
    with pytest.raises(SettingsError, match="base64"):
        from_env({"XCHAT_REGION": "a", "XCHAT_TOKEN_SIGNING_KEY_FILE": str(bad)})
    with pytest.raises(SettingsError, match="cannot read"):
        from_env({"XCHAT_REGION": "a", "XCHAT_TOKEN_SIGNING_KEY_FILE": str(tmp_path / "missing")})

"""Unit tests of the edge's pieces: strict tokens with audience and key rotation,
client addresses behind proxies, retry hints, full-string identifiers."""

from __future__ import annotations

import base64
import json
import time

import nacl.signing
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from xchat.core.addresses import ClientAddresses, parse_peer
from xchat.core.errors import InvalidArgument, ResourceExhausted, Unauthenticated, grpc_trailers
from xchat.core.ids import AccountId, DeviceId, account_id, device_id
from xchat.core.ratelimit import Rate, RateLimiter
from xchat.core.tokens import TokenSigner, TokenVerifier

ALICE, DEVICE = AccountId("alice"), DeviceId("0" * 32)


def _issue(key: nacl.signing.SigningKey, audience: str = "xchat") -> str:
    return TokenSigner(signing_key=key, lifetime_ms=60_000, audience=audience).issue(ALICE, DEVICE, now_ms=1_000)[0]


def test_only_the_canonical_base64_of_a_token_is_accepted() -> None:
    key = nacl.signing.SigningKey.generate()
    verifier = TokenVerifier(verify_key=key.verify_key)
    token = _issue(key)
    assert verifier.verify(token, now_ms=2_000).device == DEVICE
    head, claims, sig = token.split(".")
    # Before: b64decode skipped characters outside the alphabet, and padding or
    # non-zero trailing bits gave a second spelling of the same signature.
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    flipped = sig[:-1] + last[last.index(sig[-1]) ^ 1]
    for bad in (f"{sig[:10]}$!{sig[10:]}", f"{sig}==", f"{sig[:10]} {sig[10:]}", f"{sig[:10]}+/{sig[10:]}", flipped):
        with pytest.raises(Unauthenticated):
            verifier.verify(f"{head}.{claims}.{bad}", now_ms=2_000)
    with pytest.raises(Unauthenticated):
        verifier.verify(f"{head}.{claims}=.{sig}", now_ms=2_000)


def test_audience_and_claim_types_are_checked() -> None:
    key = nacl.signing.SigningKey.generate()
    with pytest.raises(Unauthenticated, match="audience"):
        TokenVerifier(verify_key=key.verify_key).verify(_issue(key, audience="staging"), now_ms=2_000)
    with pytest.raises(Unauthenticated, match="audience"):
        TokenVerifier(verify_key=key.verify_key, audience="prod").verify(_issue(key), now_ms=2_000)
    # Signed, right key and audience, but a claim of the wrong type.
    from xchat.core.tokens import key_id

    body = {"a": ["alice"], "d": DEVICE, "iat": 1, "exp": 10**14, "aud": "xchat", "kid": key_id(key.verify_key)}
    claims = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    sig = base64.urlsafe_b64encode(key.sign(f"v1.{claims}".encode()).signature).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated, match="malformed"):
        TokenVerifier(verify_key=key.verify_key).verify(f"v1.{claims}.{sig}", now_ms=2_000)


def test_several_verification_keys_allow_rotation() -> None:
    old, new, stranger = (nacl.signing.SigningKey.generate() for _ in range(3))
    during = TokenVerifier(verify_key=old.verify_key, extra_keys=[new.verify_key])
    assert during.verify(_issue(old), now_ms=2_000).account == ALICE
    assert during.verify(_issue(new), now_ms=2_000).account == ALICE
    after = TokenVerifier(verify_key=new.verify_key)
    with pytest.raises(Unauthenticated, match="unknown key"):
        after.verify(_issue(old), now_ms=2_000)
    with pytest.raises(Unauthenticated, match="unknown key"):
        during.verify(_issue(stranger), now_ms=2_000)


def test_client_addresses_group_ipv6_and_believe_only_trusted_proxies() -> None:
    direct = ClientAddresses()
    assert direct.key("ipv4:198.51.100.7:5555", ()) == "198.51.100.7"
    assert direct.key("ipv6:[2001:db8:1:2::1]:5555", ()) == direct.key("ipv6:[2001:db8:1:2:ffff::9]:1", ()) == "2001:db8:1:2::/64"
    assert direct.key("ipv6:[::ffff:198.51.100.7]:5555", ()) == "198.51.100.7"
    assert direct.key("ipv4:198.51.100.7:5555", (("x-forwarded-for", "203.0.113.1"),)) == "198.51.100.7"
    assert parse_peer("unix:/tmp/sock") is None

    proxied = ClientAddresses.from_settings("X-Forwarded-For", ["10.0.0.0/8"])
    peer = "ipv4:10.1.2.3:4444"
    assert proxied.key(peer, (("x-forwarded-for", "203.0.113.9"),)) == "203.0.113.9"
    # The left part is the client's own claim; hops through further trusted proxies are skipped.
    assert proxied.key(peer, (("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.9.9.9"),)) == "203.0.113.9"
    assert proxied.key(peer, (("x-forwarded-for", "[2001:db8::1]:443"),)) == "2001:db8::/64"
    assert proxied.key(peer, (("x-forwarded-for", "junk"),)) == "10.1.2.3"
    assert proxied.key(peer, ()) == "10.1.2.3"
    # An untrusted peer's header is ignored.
    assert proxied.key("ipv4:198.51.100.7:1", (("x-forwarded-for", "203.0.113.9"),)) == "198.51.100.7"


def test_refusals_carry_a_retry_hint() -> None:
    limiter = RateLimiter(Rate(per_second=2, burst=1), what="calls")
    limiter.take("k", now=10.0)
    with pytest.raises(ResourceExhausted) as err:
        limiter.take("k", now=10.0)
    assert err.value.retry_after_ms == 500
    assert grpc_trailers(err.value) == (("retry-after-ms", "500"),)
    with pytest.raises(ResourceExhausted) as err:
        limiter.take("k", cost=5, now=20.0)  # never payable at once
    assert err.value.retry_after_ms is not None and err.value.retry_after_ms > 0
    assert limiter.try_take("k", now=20.0) and not limiter.try_take("k", now=20.0)
    assert grpc_trailers(ResourceExhausted("mailbox full")) == ()


@pytest.mark.parametrize("bad", ["alice\n", "alice\n\n", "al", "a..b", "abc.", "Alice", "al ice", "alice\x00"])
def test_accounts_must_match_as_a_whole(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        account_id(bad)


@pytest.mark.parametrize("bad", ["0" * 32 + "\n", "0" * 31, "0" * 32 + " ", "0" * 31 + "G"])
def test_device_ids_must_match_as_a_whole(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        device_id(bad)


class _Bus:
    """An in-memory stand-in for core NATS publish/subscribe."""

    def __init__(self) -> None:
        self.callbacks: list = []
        self.published: list[bytes] = []

    async def subscribe(self, subject: str, cb):
        self.callbacks.append(cb)

        class _Sub:
            async def unsubscribe(self) -> None:
                pass

        return _Sub()

    async def publish(self, subject: str, data: bytes) -> None:
        self.published.append(data)

        class _Msg:
            pass

        msg = _Msg()
        msg.data = data
        for cb in self.callbacks:
            await cb(msg)


async def test_replicas_share_heavy_spending_and_send_nothing_for_light_callers() -> None:
    from xchat.core.sharedlimits import LimitGossip

    bus = _Bus()
    rate = Rate(per_second=1, burst=8)
    here, there = RateLimiter(rate, what="calls"), RateLimiter(rate, what="calls")
    gossip_here = LimitGossip(bus, {"calls": here}, services=("auth",))  # type: ignore[arg-type]
    gossip_there = LimitGossip(bus, {"calls": there}, services=("auth",))  # type: ignore[arg-type]
    await gossip_here.start()
    await gossip_there.start()
    try:
        here.take("light", now=1.0)  # 1 = 8 / 8: at the threshold, shared
        await gossip_here.flush(now=1.0)
        assert len(bus.published) == 1
        bus.published.clear()
        for _ in range(8):
            here.take("heavy", now=1.0)
        await gossip_here.flush(now=1.0)
        assert len(bus.published) == 1 and b"heavy" in bus.published[0]
        with pytest.raises(ResourceExhausted):
            there.take("heavy", now=1.0)  # spent on the other replica
        there.take("light", now=1.0)
    finally:
        await gossip_here.stop()
        await gossip_there.stop()
    quiet = LimitGossip(_Bus(), {"calls": RateLimiter(Rate(per_second=1, burst=100), what="calls")})  # type: ignore[arg-type]
    quiet._limiters["calls"].take("k", now=5.0)
    await quiet.flush(now=5.0)
    assert quiet._nc.published == [], "a light caller costs no message"  # type: ignore[attr-defined]
    await quiet.flush(now=time.monotonic() + 1000)
    assert not quiet._pending, "spending older than a full refill is forgotten"


# -- properties: the parsers of untrusted input answer with our errors only ------

# database=None: no .hypothesis/ directory written into the repository.
PROPERTY = hsettings(max_examples=300, deadline=None, database=None)
_KEY = nacl.signing.SigningKey(b"\x01" * 32)
_VERIFIER = TokenVerifier(verify_key=_KEY.verify_key)
_GOOD = _issue(_KEY)


@PROPERTY
@given(st.text(max_size=1200))
def test_any_string_as_a_token_is_unauthenticated_or_valid(text: str) -> None:
    try:
        _VERIFIER.verify(text, now_ms=2_000)
    except Unauthenticated:
        pass


@PROPERTY
@given(st.integers(min_value=0, max_value=len(_GOOD)), st.text(min_size=1, max_size=4))
def test_no_insertion_into_a_valid_token_is_accepted(position: int, inserted: str) -> None:
    with pytest.raises(Unauthenticated):
        _VERIFIER.verify(_GOOD[:position] + inserted + _GOOD[position:], now_ms=2_000)


@PROPERTY
@given(st.text(max_size=80), st.lists(st.tuples(st.sampled_from(["x-forwarded-for", "other"]), st.text(max_size=80)), max_size=3))
def test_any_peer_and_header_give_a_key(peer: str, metadata: list[tuple[str, str]]) -> None:
    proxied = ClientAddresses.from_settings("x-forwarded-for", ["0.0.0.0/0", "::/0"])
    for addresses in (ClientAddresses(), proxied):
        assert isinstance(addresses.key(peer, metadata), str)
        assert isinstance(addresses.key(f"ipv4:10.0.0.1:{len(peer)}", metadata), str)


@PROPERTY
@given(st.text(max_size=40))
def test_identifiers_are_valid_or_invalid_argument(text: str) -> None:
    for check in (account_id, device_id):
        try:
            value = check(text)
        except InvalidArgument:
            continue
        assert "\n" not in value and value == value.strip() and ".." not in value


def _methods():
    from xchat.v1 import attachments_pb2, auth_pb2, keys_pb2, mailbox_pb2, relay_pb2

    for module in (auth_pb2, keys_pb2, mailbox_pb2, relay_pb2, attachments_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield f"/{service.full_name}/{method.name}", getattr(module, method.input_type.name)


def test_the_edge_has_a_policy_for_every_method() -> None:
    from xchat.core.edge import POLICIES

    assert set(POLICIES) == {name for name, _ in _methods()}
    anonymous = {name.rsplit("/", 1)[1] for name, policy in POLICIES.items() if policy.anonymous}
    # SendSealed: no token; each envelope is authorised by the recipient's delivery key (xchat.relay.sealed).
    # TakeProvisioning: the rendezvous id is the capability (ADR 0011); AuditLog: auditors have no account (ADR 0014).
    # PurgeRevoked (keys, mailbox): a deleted account has no token; only revoked devices' data goes (ADR 0017).
    # PublishAuditStatement: a listed auditor key's signature is the authorisation (docs/key-transparency.md).
    assert anonymous == {"Register", "Challenge", "Login", "Refresh", "SendSealed", "TakeProvisioning", "AuditLog", "PurgeRevoked",
                         "PublishAuditStatement"}


@PROPERTY
@given(st.binary(max_size=300))
def test_any_bytes_parse_as_a_request_or_as_malformed(data: bytes) -> None:
    from xchat.core.edge import Malformed, _tolerant

    for name, request_type in _methods():
        parse = _tolerant(request_type.FromString, name)
        assert parse is not None
        parsed = parse(data)
        assert isinstance(parsed, (request_type, Malformed))

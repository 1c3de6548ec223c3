"""Property tests of the server's parsers of untrusted input (issue 17, fuzzing).

Every parser below takes bytes or text a client controls. Each property says
what the parser may do with *any* input: return a well-formed value or raise
the error it documents (``Unauthenticated``, ``InvalidArgument``; ``None`` for
a stored envelope that does not parse), never another exception type.

Covered: access tokens (strict base64url, claims of any JSON shape, key id,
audience), identifiers (account and device ids: full-string match, no
trailing newline), the signed statements (domain separation: no statement of
one kind equals one of another), the keys service's prekey validation and the
stored-envelope codec. In memory, derandomized (reproducible in CI), ~5 s.
"""

from __future__ import annotations

import base64
import json
import re
import sys

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xchat.core.envelopes import StoredEnvelope
from xchat.core.errors import InvalidArgument, Unauthenticated
from xchat.core.ids import ACCOUNT_PATTERN, DEVICE_PATTERN, account_id, device_id, exact_length, message_id
from xchat.core.tokens import MAX_TOKEN_CHARS, Principal, TokenSigner, TokenVerifier, _b64, _unb64, key_id
from xchat.keys.prekeys import (
    KIND_PQ_LAST_RESORT,
    KIND_PQ_PREKEY,
    KIND_SIGNED_PREKEY,
    MLKEM768_PUBLIC_BYTES,
    X25519_BYTES,
    PublicPrekey,
    _check,
)
from xchat.statements import login_statement, prekey_statement, register_statement

# derandomize: the same examples on every run (CI is reproducible); database=None:
# no .hypothesis/ directory written into the repository.
PROPERTY = settings(
    max_examples=200, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

_KEY = nacl.signing.SigningKey(b"\x07" * 32)
_OTHER = nacl.signing.SigningKey(b"\x08" * 32)
_KID = key_id(_KEY.verify_key)
NOW = 1_000_000


def _sign(claims_part: str, key: nacl.signing.SigningKey = _KEY) -> str:
    signed = f"v1.{claims_part}"
    return f"{signed}.{_b64(key.sign(signed.encode()).signature)}"


def _token(claims: object, key: nacl.signing.SigningKey = _KEY) -> str:
    return _sign(_b64(json.dumps(claims).encode()), key)


# -- strict base64url ---------------------------------------------------------


@PROPERTY
@given(st.binary(max_size=200))
def test_base64url_round_trips_exactly(data: bytes) -> None:
    assert _unb64(_b64(data)) == data


@PROPERTY
@given(st.text(max_size=60))
def test_base64url_accepts_only_the_canonical_spelling(text: str) -> None:
    """Whatever is accepted is the one canonical encoding of what it decodes to."""
    try:
        data = _unb64(text)
    except ValueError:
        return
    assert _b64(data) == text
    assert re.fullmatch(r"[A-Za-z0-9_-]*", text)


# -- access tokens ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _claims() -> st.SearchStrategy[dict[str, object]]:
    """Claims of any shape, biased towards almost-valid ones (each field may be off)."""
    good = {"a": "alice", "d": "0" * 32, "iat": 1, "exp": NOW + 60_000, "aud": "xchat", "kid": _KID}
    return st.fixed_dictionaries(
        {},
        optional={name: st.just(value) | json_values for name, value in good.items()},
    )


def _well_formed(claims: dict[str, object]) -> bool:
    return (
        claims.get("kid") == _KID
        and claims.get("aud") == "xchat"
        and isinstance(claims.get("a"), str)
        and isinstance(claims.get("d"), str)
        and type(claims.get("exp")) is int
    )


@PROPERTY
@given(_claims())
def test_signed_claims_of_any_shape_verify_only_when_well_formed(claims: dict[str, object]) -> None:
    """A genuinely signed token whose claims are wrong in any way is Unauthenticated, never a crash."""
    verifier = TokenVerifier(verify_key=_KEY.verify_key)
    token = _token(claims)
    if len(token) > MAX_TOKEN_CHARS:
        return
    try:
        principal = verifier.verify(token, now_ms=NOW)
    except Unauthenticated:
        assert not _well_formed(claims) or claims["exp"] + 30_000 < NOW  # type: ignore[operator]
        return
    assert _well_formed(claims)
    assert principal == Principal(claims["a"], claims["d"], claims["exp"])  # type: ignore[arg-type]


@PROPERTY
@given(json_values)
def test_claims_that_are_not_an_object_are_malformed(value: object) -> None:
    token = _token(value)
    if len(token) <= MAX_TOKEN_CHARS and not isinstance(value, dict):
        with pytest.raises(Unauthenticated):
            TokenVerifier(verify_key=_KEY.verify_key).verify(token, now_ms=NOW)


@PROPERTY
@given(st.binary(max_size=700))
def test_claims_of_any_bytes_are_unauthenticated_or_valid(raw: bytes) -> None:
    """Claims that are not JSON, not UTF-8, or JSON of any depth: Unauthenticated."""
    try:
        TokenVerifier(verify_key=_KEY.verify_key).verify(_sign(_b64(raw)), now_ms=NOW)
    except Unauthenticated:
        pass


@PROPERTY
@given(st.sampled_from(["kid", "aud"]), st.text(max_size=20))
def test_key_id_and_audience_select_and_bind(field: str, value: str) -> None:
    claims = {"a": "alice", "d": "0" * 32, "iat": 1, "exp": NOW + 60_000, "aud": "xchat", "kid": _KID, field: value}
    verifier = TokenVerifier(verify_key=_KEY.verify_key)
    if value == {"kid": _KID, "aud": "xchat"}[field]:
        assert verifier.verify(_token(claims), now_ms=NOW).account == "alice"
        return
    expected = "unknown key" if field == "kid" else "audience"
    with pytest.raises(Unauthenticated, match=expected):
        verifier.verify(_token(claims), now_ms=NOW)


def test_a_token_naming_one_key_but_signed_by_another_is_refused() -> None:
    claims = {"a": "alice", "d": "0" * 32, "iat": 1, "exp": NOW + 60_000, "aud": "xchat", "kid": _KID}
    both = TokenVerifier(verify_key=_KEY.verify_key, extra_keys=[_OTHER.verify_key])
    with pytest.raises(Unauthenticated, match="signature is invalid"):
        both.verify(_token(claims, key=_OTHER), now_ms=NOW)
    claims["kid"] = key_id(_OTHER.verify_key)
    assert both.verify(_token(claims, key=_OTHER), now_ms=NOW).device == "0" * 32
    with pytest.raises(Unauthenticated, match="unknown key"):
        TokenVerifier(verify_key=_KEY.verify_key).verify(_token(claims, key=_OTHER), now_ms=NOW)


@PROPERTY
@given(st.text(alphabet=st.characters(codec="ascii"), max_size=MAX_TOKEN_CHARS + 10))
def test_any_ascii_in_the_three_part_shape_is_unauthenticated(text: str) -> None:
    for token in (text, f"v1.{text}", f"v1.{text}.", f"v1..{text}", f"v1.{text}.{text}"):
        with pytest.raises(Unauthenticated):
            TokenVerifier(verify_key=_KEY.verify_key).verify(token, now_ms=NOW)


def _nested_claims_token() -> str:
    # The deepest JSON array that fits in a token: the signature part may be
    # empty, so the claims take all but "v1." and ".".
    depth = (MAX_TOKEN_CHARS - 4) * 3 // 4
    return f"v1.{_b64(b'[' * depth)}."


def _at_depth(frames: int, call: object) -> object:
    return _at_depth(frames - 1, call) if frames else call()  # type: ignore[operator]


def test_deeply_nested_claims_are_malformed_even_on_a_deep_stack() -> None:
    """Regression: json.loads raised RecursionError (an INTERNAL at the edge) for
    ~765 nested arrays when called under ~250 Python frames."""
    verifier = TokenVerifier(verify_key=_KEY.verify_key)
    token = _nested_claims_token()
    assert len(token) <= MAX_TOKEN_CHARS
    limit = sys.getrecursionlimit()
    for frames in (0, 200, 400, limit // 2):
        with pytest.raises(Unauthenticated, match="malformed"):
            _at_depth(frames, lambda: verifier.verify(token, now_ms=NOW))


def test_issued_tokens_round_trip() -> None:
    signer = TokenSigner(signing_key=_KEY, lifetime_ms=60_000)
    token, expires = signer.issue(account_id("alice"), device_id("f" * 32), now_ms=NOW)
    assert TokenVerifier(verify_key=_KEY.verify_key).verify(token, now_ms=NOW) == Principal("alice", "f" * 32, expires)  # type: ignore[arg-type]


# -- identifiers ----------------------------------------------------------------


@PROPERTY
@given(st.from_regex(ACCOUNT_PATTERN, fullmatch=True), st.sampled_from(["", "\n", "\r\n", " ", "\x00", ".", "/", "*", ">"]))
def test_accounts_match_as_a_whole(candidate: str, suffix: str) -> None:
    valid = ".." not in candidate and not candidate.endswith(".")
    if valid:
        assert account_id(candidate) == candidate
    else:
        with pytest.raises(InvalidArgument):
            account_id(candidate)
    if suffix and suffix != ".":
        for bad in (candidate + suffix, suffix + candidate):
            with pytest.raises(InvalidArgument):
                account_id(bad)


@PROPERTY
@given(st.from_regex(DEVICE_PATTERN, fullmatch=True), st.sampled_from(["\n", " ", "0", "A", ".", "*", ">", "\x00"]))
def test_device_ids_match_as_a_whole(candidate: str, extra: str) -> None:
    assert device_id(candidate) == candidate
    bad_cases = [candidate + extra, extra + candidate, candidate[:-1]]
    if extra not in "0123456789abcdef":
        bad_cases.append(candidate[:-1] + extra)
    for bad in bad_cases:
        with pytest.raises(InvalidArgument):
            device_id(bad)


@PROPERTY
@given(st.text(max_size=40))
def test_accepted_identifiers_are_safe_nats_tokens(text: str) -> None:
    """What passes is usable as a NATS subject token and KV key: no wildcard, space, control or empty part."""
    for check in (account_id, device_id):
        try:
            value = check(text)
        except InvalidArgument:
            continue
        assert re.fullmatch(r"[a-z0-9._-]+", value)
        assert all(part for part in value.split("."))


@PROPERTY
@given(st.binary(max_size=40), st.integers(0, 70))
def test_byte_fields_have_exact_lengths(data: bytes, expected: int) -> None:
    if len(data) == expected:
        assert exact_length(data, expected, field="f") == data
    else:
        with pytest.raises(InvalidArgument, match="f must be"):
            exact_length(data, expected, field="f")
    if len(data) == 16:
        assert message_id(data) == data
    else:
        with pytest.raises(InvalidArgument):
            message_id(data)


# -- signed statements -----------------------------------------------------------

ids = st.from_regex(DEVICE_PATTERN, fullmatch=True)
accounts = st.from_regex(ACCOUNT_PATTERN, fullmatch=True)


@PROPERTY
@given(accounts, st.binary(min_size=32, max_size=32), ids, st.binary(min_size=32, max_size=32),
       st.integers(1, 3), st.integers(0, 2**32 - 1), st.binary(max_size=1184))
def test_statements_of_different_kinds_never_collide(
    account: str, ik: bytes, device: str, nonce: bytes, kind: int, kid: int, public: bytes
) -> None:
    """Domain separation: a signature made for one purpose is never valid for another."""
    register, login, prekey = register_statement(account, ik), login_statement(device, nonce), prekey_statement(kind, kid, public)
    assert len({register, login, prekey}) == 3
    assert register.startswith(b"xchat-register-v1\x00") and login.startswith(b"xchat-login-v1\x00")
    assert prekey.startswith(b"xchat-prekey-v1") and not prekey.startswith(b"xchat-prekey-v1\x00")


@PROPERTY
@given(accounts, accounts, st.binary(min_size=32, max_size=32))
def test_register_statements_are_injective_over_valid_accounts(a: str, b: str, ik: bytes) -> None:
    # Accounts never contain NUL, so the separator cannot be shifted.
    assert (register_statement(a, ik) == register_statement(b, ik)) == (a == b)


@PROPERTY
@given(st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=64))
def test_prekey_statements_are_injective(k1: int, k2: int, id1: int, id2: int, public: bytes) -> None:
    assert (prekey_statement(k1, id1, public) == prekey_statement(k2, id2, public)) == ((k1, id1) == (k2, id2))


# -- the keys service's prekey validation ---------------------------------------------

_IK = nacl.signing.SigningKey(b"\x09" * 32)
_KINDS = {
    KIND_SIGNED_PREKEY: X25519_BYTES,
    KIND_PQ_PREKEY: MLKEM768_PUBLIC_BYTES,
    KIND_PQ_LAST_RESORT: MLKEM768_PUBLIC_BYTES,
}


@st.composite
def _uploaded_keys(draw: st.DrawFn) -> tuple[int, PublicPrekey, bool]:
    """A prekey as a client might upload it: often right, sometimes off in one way."""
    kind = draw(st.sampled_from(sorted(_KINDS)))
    kid = draw(st.integers(0, 2**32 - 1) | st.integers(-(2**40), 2**40))
    size = _KINDS[kind]
    public = draw(st.binary(min_size=size, max_size=size) | st.binary(max_size=size + 2))
    good_sig = _IK.sign(prekey_statement(kind, kid, public)).signature if 0 <= kid < 2**32 else b"\x00" * 64
    signature = draw(st.just(good_sig) | st.binary(min_size=64, max_size=64) | st.binary(max_size=70))
    valid = 0 <= kid < 2**32 and len(public) == size and signature == good_sig
    return kind, PublicPrekey(kid, public, signature), valid


@PROPERTY
@given(_uploaded_keys(), st.booleans())
def test_prekey_validation_accepts_exactly_the_signed_keys(case: tuple[int, PublicPrekey, bool], relabel: bool) -> None:
    kind, key, valid = case
    if relabel:  # a one-time PQ key presented as the last-resort one (or back): the kind byte is signed
        kind = {KIND_PQ_PREKEY: KIND_PQ_LAST_RESORT, KIND_PQ_LAST_RESORT: KIND_PQ_PREKEY}.get(kind, kind)
        valid = valid and kind == KIND_SIGNED_PREKEY
    try:
        _check(key, kind=kind, size=_KINDS[kind], what="k", identity_key=bytes(_IK.verify_key))
    except InvalidArgument:
        assert not valid
    else:
        assert valid


@PROPERTY
@given(st.binary(max_size=40), st.binary(max_size=70), st.binary(max_size=40))
def test_prekey_validation_with_any_identity_key_is_invalid_argument_or_valid(ik: bytes, sig: bytes, public: bytes) -> None:
    """A device record's identity key of any length (or not a curve point) never crashes the check."""
    for kind, size in _KINDS.items():
        try:
            _check(PublicPrekey(1, public[:size].ljust(size, b"\x00"), sig), kind=kind, size=size, what="k", identity_key=ik)
        except InvalidArgument:
            pass


@PROPERTY
@given(st.binary(max_size=300))
def test_any_bytes_decode_as_a_stored_envelope_or_none(data: bytes) -> None:
    """One bad record must not stop a mailbox: decode never raises."""
    envelope = StoredEnvelope.decode(data)
    if envelope is not None:
        assert isinstance(envelope.ciphertext, bytes) and isinstance(envelope.stored_at_ms, int)


@PROPERTY
@given(st.binary(min_size=16, max_size=16), st.binary(max_size=200), st.integers(0, 2**63 - 1))
def test_stored_envelopes_round_trip(mid: bytes, ciphertext: bytes, stored_at: int) -> None:
    envelope = StoredEnvelope(message_id(mid), ciphertext, stored_at)
    assert StoredEnvelope.decode(envelope.encode()) == envelope


def test_a_valid_b64_helper_matches_the_standard_library() -> None:
    for n in range(0, 10):
        data = bytes(range(n))
        assert _b64(data) == base64.urlsafe_b64encode(data).decode().rstrip("=")

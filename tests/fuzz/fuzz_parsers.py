"""Coverage-guided fuzzing (atheris / libFuzzer) of the parsers that take untrusted bytes.

Targets (each feeds libFuzzer's bytes to one family of parsers and lets only
the documented error types through; anything else is a crash):

* ``tokens``: ``xchat.core.tokens.TokenVerifier.verify`` on the bytes as a
  token string, and on the bytes as the *claims* of a genuinely signed token
  (so the JSON and claim checks are reached past the signature). Allowed:
  ``Unauthenticated``.
* ``sealed``: ``xchat.client.crypto.unseal`` on the bytes, and on the bytes
  as the plaintext of a genuinely sealed envelope (what any sender can make),
  then ``open_message`` on the inner message. Allowed: ``CryptoError``.
* ``envelopes``: the stored-envelope codec (never raises), the ratchet wire
  message, the inner payload, bundle, session and prekey-store parsers
  (``CryptoError``), and the SDK's ``SessionBook.open`` on the bytes as an
  envelope from the mailbox (never raises; nothing stored).
* ``statements``: the keys service's prekey validation (``InvalidArgument``),
  identifiers (``InvalidArgument``) and the signed statements' builders.

Run one target longer (Ctrl-C to stop; findings are written as ``crash-*``
files under the artifact prefix)::

    .venv/bin/python tests/fuzz/fuzz_parsers.py sealed /tmp/corpus-sealed \
        -max_total_time=600 -artifact_prefix=/tmp/

The corpus folder is created and seeded with valid samples when empty.
``tests/fuzz/test_fuzz_harnesses.py`` runs each target briefly in CI.
Needs ``pip install -e '.[fuzz]'`` (atheris; CPython wheels on Linux x86_64).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["xchat"]):
    import nacl.signing

    from xchat.client._sessions import SessionBook
    from xchat.client._state import LocalState
    from xchat.client.crypto import (
        CryptoError,
        IdentityKeyPair,
        Payload,
        PrekeyBundle,
        PrekeyStore,
        Session,
        initiate_session,
        open_message,
        unseal,
    )
    from xchat.client.crypto.primitives import aead_encrypt, ed25519_public_to_x25519, x25519, x25519_generate, x25519_public_bytes
    from xchat.client.crypto.sealed import SEALED_VERSION, _key
    from xchat.client.crypto.wire import parse_wire
    from xchat.core.envelopes import StoredEnvelope
    from xchat.core.errors import InvalidArgument, Unauthenticated
    from xchat.core.ids import account_id, device_id
    from xchat.core.tokens import TokenVerifier, _b64, key_id
    from xchat.keys.prekeys import MLKEM768_PUBLIC_BYTES, X25519_BYTES, PublicPrekey, _check
    from xchat.statements import login_statement, prekey_statement, register_statement

ALICE_DEV = "a" * 32
_TOKEN_KEY = nacl.signing.SigningKey(b"\x05" * 32)
_VERIFIER = TokenVerifier(verify_key=_TOKEN_KEY.verify_key)
NOW_MS = 1_000_000


# -- tokens -------------------------------------------------------------------------------


def fuzz_tokens(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    claims_part = _b64(data)
    signed = f"v1.{claims_part}"
    for token in (text, f"{signed}.{_b64(_TOKEN_KEY.sign(signed.encode()).signature)}"):
        try:
            _VERIFIER.verify(token, now_ms=NOW_MS)
        except Unauthenticated:
            pass


def seeds_tokens() -> list[bytes]:
    claims = '{"a":"alice","d":"%s","iat":1,"exp":2000000,"aud":"xchat","kid":"%s"}' % ("0" * 32, key_id(_TOKEN_KEY.verify_key))
    return [claims.encode(), b"[]", b'{"kid":null}']


# -- sealed sender -----------------------------------------------------------------------------


class _Receiver:
    """Bob: an identity, a prekey store, and one genuine sealed PREKEY message from Alice."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="xchat-fuzz-"))
        alice = SessionBook(LocalState(self.folder / "alice.db"))
        self.state = LocalState(self.folder / "bob.db")
        self.book = SessionBook(self.state)
        alice.ensure_identity()
        self.book.ensure_identity()
        self.book.new_prekeys(one_time=2, pq=2, rotate_signed=True)
        self.bundle = PrekeyBundle.from_store(self.book.prekeys)
        alice.start_sessions("bob", [("b" * 32, self.bundle)])
        [item] = alice.encrypt(sender=("alice", ALICE_DEV), account="bob", devices=["b" * 32], body=b"hi", content_type="text/plain")
        self.genuine = item
        self.inner = unseal(self.book.identity, item.ciphertext).inner

    def snapshot(self) -> tuple[object, ...]:
        db = self.state._db  # noqa: SLF001
        return (
            db.execute("SELECT * FROM sessions").fetchall(),
            db.execute("SELECT message_id FROM inbox").fetchall(),
            self.state.get_meta("prekeys"),
        )


_BOB: _Receiver | None = None


def _bob() -> _Receiver:
    global _BOB
    if _BOB is None:
        _BOB = _Receiver()
    return _BOB


def _raw_seal(body: bytes, recipient: bytes) -> bytes:
    ephemeral = x25519_generate()
    public = x25519_public_bytes(ephemeral)
    shared = x25519(ephemeral, ed25519_public_to_x25519(recipient, "recipient"))
    header = bytes([SEALED_VERSION]) + public
    return header + aead_encrypt(_key(shared, public, recipient), body, header + recipient)


def fuzz_sealed(data: bytes) -> None:
    bob = _bob()
    identity = bob.book.identity
    for sealed in (data, _raw_seal(data, identity.public)):
        try:
            content = unseal(identity, sealed)
        except CryptoError:
            continue
        try:
            open_message(content.inner, our_identity=identity, prekey_store=bob.book.prekeys, session=None)
        except CryptoError:
            pass


def seeds_sealed() -> list[bytes]:
    bob = _bob()
    body = bytes([5]) + b"alice" + bytes.fromhex(ALICE_DEV) + bob.inner
    return [bob.genuine.ciphertext, body, body[:60]]


# -- envelopes and the SDK's receive path ------------------------------------------------------------


def _parsers() -> list[Callable[[bytes], object]]:
    bob = _bob()
    return [
        parse_wire,
        Payload.decode,
        PrekeyBundle.from_bytes,
        Session.from_bytes,
        IdentityKeyPair.from_bytes,
        lambda blob: PrekeyStore.from_bytes(blob, bob.book.identity),
    ]


def fuzz_envelopes(data: bytes) -> None:
    envelope = StoredEnvelope.decode(data)  # never raises
    assert envelope is None or isinstance(envelope.ciphertext, bytes)
    for parse in _parsers():
        try:
            parse(data)
        except CryptoError:
            pass
    bob = _bob()
    before = bob.snapshot()
    mid = data[:16]
    opened = bob.book.open(mid, data[16:])  # never raises; None for anything but a genuine envelope
    if opened is not None:
        assert (mid, data[16:]) == (bob.genuine.message_id, bob.genuine.ciphertext), "a forged envelope opened"
        bob.book.forget()
    assert bob.snapshot() == before, "opening an envelope stored something"


def seeds_envelopes() -> list[bytes]:
    bob = _bob()
    identity = IdentityKeyPair.generate()
    session, _ = initiate_session(identity, bob.bundle)
    return [
        StoredEnvelope(bob.genuine.message_id, bob.genuine.ciphertext, 1).encode(),  # type: ignore[arg-type]
        bob.inner,
        session.encrypt(Payload.new(b"x", counter=1)),
        Payload.new(b"body", counter=2).encode(),
        bob.bundle.to_bytes(),
        session.to_bytes(),
        bob.genuine.message_id + bob.genuine.ciphertext,
    ]


# -- statements, identifiers and the keys service's validation --------------------------------------

_IK = nacl.signing.SigningKey(b"\x06" * 32)
_SIZES = {1: X25519_BYTES, 2: MLKEM768_PUBLIC_BYTES, 3: MLKEM768_PUBLIC_BYTES}


def fuzz_statements(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.ConsumeIntInRange(1, 3)
    kid = fdp.ConsumeIntInRange(-(2**33), 2**33)
    sign = fdp.ConsumeBool()
    text = fdp.ConsumeUnicodeNoSurrogates(40)
    public = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1200))
    identity = bytes(_IK.verify_key) if fdp.ConsumeBool() else fdp.ConsumeBytes(33)
    signature = fdp.ConsumeBytes(70)
    if sign and 0 <= kid < 2**32:
        signature = _IK.sign(prekey_statement(kind, kid, public)).signature
    try:
        _check(PublicPrekey(kid, public, signature), kind=kind, size=_SIZES[kind], what="k", identity_key=identity)
    except InvalidArgument:
        pass
    for check in (account_id, device_id):
        try:
            value = check(text)
        except InvalidArgument:
            continue
        assert value == text and "\n" not in value
        assert register_statement(value, public) != login_statement(value, public)


def seeds_statements() -> list[bytes]:
    return [bytes(64), bytes(range(256)) * 5]


TARGETS: dict[str, tuple[Callable[[bytes], None], Callable[[], list[bytes]]]] = {
    "tokens": (fuzz_tokens, seeds_tokens),
    "sealed": (fuzz_sealed, seeds_sealed),
    "envelopes": (fuzz_envelopes, seeds_envelopes),
    "statements": (fuzz_statements, seeds_statements),
}


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} {{{','.join(TARGETS)}}} CORPUS_DIR [libFuzzer flags]")
    target, seeds = TARGETS[argv[1]]
    corpus = Path(argv[2])
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for n, seed in enumerate(seeds()):
            (corpus / f"seed-{n}").write_bytes(seed)
    # Quiet: every refused envelope logs a warning in the SDK.
    import logging

    logging.disable(logging.CRITICAL)
    atheris.Setup([argv[0], *argv[3:], str(corpus)], target)
    atheris.Fuzz()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main(sys.argv)

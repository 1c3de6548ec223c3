"""Forward secrecy against an attacker who holds key material, not one who asks the library.

``test_crypto_security`` shows the library *refuses* old messages (a replay
check); that passes on a ratchet that keeps every chain's first key, since the
refusal is a counter comparison. Here the attacker leaks a session's current
serialized state and works with the bytes: every 32-byte window of the blob is
tried as a message key, and as a chain key walked forward ``WALK`` steps; the
root key and ratchet private key are also combined with every captured
header's ratchet key. Captured earlier ciphertexts must not open with any of it.

The attack procedure is checked to work (a state leaked *before* the messages
opens them), and the test was shown to fail on a mutant ratchet that keeps each
chain's first key in its state (see the commit that added it).
"""

from __future__ import annotations

from xchat.client.crypto import CryptoError, Session
from xchat.client.crypto.primitives import aead_decrypt, x25519
from xchat.client.crypto.ratchet import RatchetState, kdf_ck, kdf_rk
from xchat.client.crypto.encoding import Reader
from xchat.client.crypto.wire import parse_wire

# Chain steps the attacker walks forward from every candidate chain key:
# more than any chain in these conversations is long.
WALK = 8
KEY = 32


def _ratchet_state(blob: bytes) -> RatchetState:
    """The ratchet part of a serialized session (format in ``sessions``'s docstring)."""
    r = Reader(blob, "session")
    version = r.take(2 + 3 * KEY, "version, role, identities, digest")[0]
    if version >= 3:
        r.take(r.u8("ids length"), "bound ids")
    if r.flag("pending"):
        r.take(r.u16("pending length"), "pending")
    return RatchetState.read(r)


def _candidate_message_keys(blob: bytes, headers: list[bytes]) -> set[bytes]:
    chain_keys = {blob[i : i + KEY] for i in range(len(blob) - KEY + 1)}
    state = _ratchet_state(blob)
    for dh in headers:  # what the leaked root and ratchet keys give with each captured header
        chain_keys.add(kdf_rk(state.rk, x25519(state.dhs, dh, "captured ratchet key"))[1])
    keys = set(chain_keys)
    for ck in chain_keys:
        for _ in range(WALK):
            ck, mk = kdf_ck(ck)
            keys.add(mk)
    return keys


def _opened_by_attacker(leaked: bytes, captured: list[bytes], ad: bytes) -> list[bytes]:
    messages = [parse_wire(wire) for wire in captured]
    keys = _candidate_message_keys(leaked, [m.header.dh for m in messages])
    opened = []
    for message in messages:
        for mk in keys:
            try:
                opened.append(aead_decrypt(mk, message.ciphertext, ad + message.authenticated))
                break
            except CryptoError:
                continue
    return opened


def _talk(sender: Session, receiver: Session, make_payload, count: int) -> list[bytes]:
    wires = [sender.encrypt(make_payload(b"secret")) for _ in range(count)]
    for wire in wires:
        receiver.decrypt(wire)
    return wires


def test_leaked_current_state_opens_no_captured_ciphertext(conversation, make_payload) -> None:
    a, b = conversation.a, conversation.b
    captured_from_a: list[bytes] = []
    captured_from_b: list[bytes] = []
    for _ in range(3):
        captured_from_a += _talk(a, b, make_payload, 3)
        captured_from_b += _talk(b, a, make_payload, 2)
    # Unanswered messages too: the newest chain of each side, still current.
    captured_from_a += _talk(a, b, make_payload, 3)
    ad = a.associated_data
    for leaked in (a.to_bytes(), b.to_bytes()):
        assert _opened_by_attacker(leaked, captured_from_a, ad) == []
        assert _opened_by_attacker(leaked, captured_from_b, ad) == []


def test_the_attack_opens_messages_when_the_state_is_leaked_before_them(conversation, make_payload) -> None:
    """The procedure above is a real attack: a state from before the messages opens them."""
    a, b = conversation.a, conversation.b
    before = b.to_bytes()
    captured = _talk(a, b, make_payload, 3)
    opened = _opened_by_attacker(before, captured, a.associated_data)
    assert len(opened) == 3

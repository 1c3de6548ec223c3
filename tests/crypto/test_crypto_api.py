"""The public surface: ``__all__`` is honest and the error tree is as documented."""

from __future__ import annotations

import xchat.client.crypto as crypto
from xchat.client.crypto import errors

EXPECTED_CALLABLES = {
    "IdentityKeyPair", "PrekeyStore", "PublicPrekeys", "SignedPrekey", "OneTimePrekey", "PqPrekey",
    "PrekeyKind", "prekey_signature_message", "PrekeyBundle", "InitialMessage", "Session",
    "OpenedMessage", "initiate_session", "respond_to_session", "open_message", "Payload",
    "safety_number", "MessageType",
}


def test_all_names_exist_and_nothing_public_is_missing() -> None:
    assert len(crypto.__all__) == len(set(crypto.__all__))
    for name in crypto.__all__:
        assert hasattr(crypto, name), name
    assert EXPECTED_CALLABLES <= set(crypto.__all__)
    assert set(errors.__all__) <= set(crypto.__all__)


def test_error_tree() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.CryptoError)
    for sub in ("UnsupportedVersionError", "KeyLengthError", "InvalidKeyError", "PayloadError"):
        assert issubclass(getattr(errors, sub), errors.MalformedMessageError)
    for sub in ("TamperedMessageError", "ReplayedMessageError", "TooManySkippedMessagesError"):
        assert issubclass(getattr(errors, sub), errors.DecryptionError)
    # Every class in the module is drawn in the docstring tree.
    for name in errors.__all__:
        assert name in (errors.__doc__ or ""), name

"""The crypto package's exception tree.

Every failure this package reports is a :class:`CryptoError`; parsers and
decryptors never let ``struct.error``, ``IndexError``, ``ValueError`` or a
PyNaCl/``cryptography`` exception escape (those are translated where the
foreign call is made, in :mod:`.primitives`, and chained with ``from``)::

    CryptoError
    ├── MalformedMessageError         bytes that do not parse (truncated, trailing, bad field)
    │   ├── UnsupportedVersionError   a version byte this build does not understand
    │   ├── KeyLengthError            a key/signature/ciphertext has the wrong size
    │   ├── InvalidKeyError           right size, but not a usable key (e.g. not a curve point)
    │   └── PayloadError              a payload field is out of bounds (body too big, bad content type)
    ├── BundleSignatureError          a prekey signature in a bundle does not verify (says which)
    ├── UnknownPrekeyError            an initial message names a prekey we do not (or no longer) hold
    ├── IdentityMismatchError         state or message belongs to a different identity
    ├── NoSessionError                a NORMAL message arrived but there is no session to open it
    ├── SessionMismatchError          a PREKEY message starts a different session than the one given
    └── DecryptionError               the ratchet refused the message; session state is unchanged
        ├── TamperedMessageError      AEAD authentication failed (bit flipped, wrong key, forged)
        ├── ReplayedMessageError      the message key for this header was already used and deleted
        └── TooManySkippedMessagesError  the header asks to skip more keys than the bound allows

Errors carry structured attributes (``what``, ``expected``, ``key``, ``key_id``…) so
callers branch on data, never on message text.
"""

from __future__ import annotations

__all__ = [
    "BundleSignatureError",
    "CryptoError",
    "DecryptionError",
    "IdentityMismatchError",
    "InvalidKeyError",
    "KeyLengthError",
    "MalformedMessageError",
    "NoSessionError",
    "PayloadError",
    "ReplayedMessageError",
    "SessionMismatchError",
    "TamperedMessageError",
    "TooManySkippedMessagesError",
    "UnknownPrekeyError",
    "UnsupportedVersionError",
]


class CryptoError(Exception):
    """Root of every error raised by :mod:`xchat.client.crypto`."""


class MalformedMessageError(CryptoError):
    """Input bytes do not follow the expected layout."""


class UnsupportedVersionError(MalformedMessageError):
    """A version byte names a format this build cannot read.

    ``what`` names the format (``"wire"``, ``"bundle"``, ``"session"``…).
    """

    def __init__(self, what: str, version: int, supported: tuple[int, ...]) -> None:
        super().__init__(f"unsupported {what} version {version} (supported: {supported})")
        self.what = what
        self.version = version
        self.supported = supported


class KeyLengthError(MalformedMessageError):
    """A key, signature or KEM ciphertext has the wrong size."""

    def __init__(self, what: str, expected: int, actual: int) -> None:
        super().__init__(f"{what}: expected {expected} bytes, got {actual}")
        self.what = what
        self.expected = expected
        self.actual = actual


class InvalidKeyError(MalformedMessageError):
    """A key of the right size that the primitive rejects (invalid or low-order point)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: not a valid key")
        self.what = what


class PayloadError(MalformedMessageError):
    """A payload field violates its bound (size, range or alphabet)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"payload {field}: {reason}")
        self.field = field
        self.reason = reason


class BundleSignatureError(CryptoError):
    """A prekey signature failed verification under the bundle's identity key.

    ``key`` is ``"signed_prekey"``, ``"pq_prekey"`` or ``"last_resort_pq_prekey"``.
    """

    def __init__(self, key: str, key_id: int) -> None:
        super().__init__(f"signature on {key} (id {key_id}) does not verify")
        self.key = key
        self.key_id = key_id


class UnknownPrekeyError(CryptoError):
    """The initial message references a prekey the store does not hold.

    ``kind`` is ``"signed_prekey"``, ``"one_time_prekey"``, ``"pq_prekey"`` or
    ``"last_resort_pq_prekey"``.
    """

    def __init__(self, kind: str, key_id: int) -> None:
        super().__init__(f"unknown {kind} id {key_id}")
        self.kind = kind
        self.key_id = key_id


class IdentityMismatchError(CryptoError):
    """State or message is bound to another identity than the one supplied."""


class NoSessionError(CryptoError):
    """A NORMAL (non-prekey) message cannot start a session."""


class SessionMismatchError(CryptoError):
    """A PREKEY message was offered to a session it did not create.

    :func:`~.sessions.open_message` treats this as the peer starting a new
    session and answers it from the prekey store instead.
    """


class DecryptionError(CryptoError):
    """The ratchet could not decrypt; the session is exactly as before the call."""


class TamperedMessageError(DecryptionError):
    """AEAD verification failed: header, ciphertext or associated data was altered."""


class ReplayedMessageError(DecryptionError):
    """The message key this header names is gone: already used (replay) or expired.

    Forward secrecy means a used message key is deleted, so a second delivery of
    the same ciphertext can only be refused.
    """


class TooManySkippedMessagesError(DecryptionError):
    """Opening the message would require deriving more skipped keys than allowed."""

    def __init__(self, requested: int, limit: int) -> None:
        super().__init__(f"message would skip {requested} keys (limit {limit})")
        self.requested = requested
        self.limit = limit

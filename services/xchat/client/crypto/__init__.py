"""End-to-end session cryptography for xchat clients: PQXDH + Double Ratchet.

Public API (everything else is private to the package)::

    Identity and prekeys
      IdentityKeyPair.generate() / .public / .sign() / .to_bytes() / .from_bytes()
      PrekeyStore(identity)            device-private prekeys: generate_signed_prekey(),
                                       generate_one_time_prekeys(n), generate_pq_prekeys(n),
                                       generate_last_resort_pq(), mark_published(), prune_retired(),
                                       public_prekeys(), to_bytes()/from_bytes(data, identity)
      SignedPrekey, OneTimePrekey, PqPrekey, PublicPrekeys   public upload material
      PrekeyKind, prekey_signature_message(kind, key_id, public)   server-verified contract
      PrekeyBundle(identity_key=, signed_prekey=, pq_prekey=, one_time_prekey=)
                                       .verify() / .to_bytes() / .from_bytes() / .from_store()

    Sessions
      initiate_session(our_identity, bundle) -> (Session, InitialMessage)
      respond_to_session(our_identity, prekey_store, wire) -> (Session, Payload)
      open_message(wire, our_identity=, prekey_store=, session=) -> OpenedMessage
      Session.encrypt(payload) -> wire bytes / .decrypt(wire) -> Payload
      Session.to_bytes() / Session.from_bytes()
      Payload(message_id=, counter=, sent_at_ms=, content_type=, body=, extensions=()) / Payload.new()
                                       .encode() / .decode() / .extension(type)
      safety_number(our_key, our_id, their_key, their_id) -> 60 digits

    Sealed sender
      seal(sender_account=, sender_device=, inner=, recipient_identity=, profile_key=b"") -> bytes
      unseal(our_identity, sealed) -> SealedContent(sender_account, sender_device, inner, profile_key)

    Delivery keys (unidentified delivery)
      new_profile_key() -> 32 bytes; delivery_key(profile_key) -> 16 bytes;
      delivery_verifier(delivery_key) -> SHA-256, registered with auth

    Errors: CryptoError and its tree (see ``errors``).

See docs/crypto.md for the construction and its security properties.
"""

from .bundles import BUNDLE_VERSION, PrekeyBundle
from .delivery import DELIVERY_KEY_SIZE, PROFILE_KEY_SIZE, delivery_key, delivery_verifier, new_profile_key
from .errors import (
    BundleSignatureError,
    CryptoError,
    DecryptionError,
    IdentityMismatchError,
    InvalidKeyError,
    KeyLengthError,
    MalformedMessageError,
    NoSessionError,
    PayloadError,
    ReplayedMessageError,
    SessionMismatchError,
    TamperedMessageError,
    TooManySkippedMessagesError,
    UnknownPrekeyError,
    UnsupportedVersionError,
)
from .fingerprints import safety_number
from .identity import IdentityKeyPair
from .payload import MAX_BODY_SIZE, MESSAGE_ID_SIZE, PADDING_BLOCK, PAYLOAD_VERSION, Payload
from .pqxdh import KDF_INFO, InitialMessage
from .prekey_store import PrekeyStore, PublicPrekeys
from .prekeys import OneTimePrekey, PqPrekey, PrekeyKind, SignedPrekey, prekey_signature_message
from .primitives import (
    ED25519_PUBLIC_KEY_SIZE,
    ED25519_SIGNATURE_SIZE,
    MLKEM768_CIPHERTEXT_SIZE,
    MLKEM768_PUBLIC_KEY_SIZE,
    X25519_KEY_SIZE,
)
from .ratchet import MAX_SKIP, MAX_SKIPPED_KEYS
from .sealed import SEALED_VERSION, SealedContent, seal, unseal
from .sessions import (
    SESSION_FORMAT_VERSION,
    OpenedMessage,
    Session,
    initiate_session,
    open_message,
    respond_to_session,
)
from .wire import WIRE_VERSION, MessageType

__all__ = [
    "DELIVERY_KEY_SIZE",
    "PADDING_BLOCK",
    "PROFILE_KEY_SIZE",
    "delivery_key",
    "delivery_verifier",
    "new_profile_key",
    "SEALED_VERSION",
    "SealedContent",
    "seal",
    "unseal",
    "BUNDLE_VERSION",
    "ED25519_PUBLIC_KEY_SIZE",
    "ED25519_SIGNATURE_SIZE",
    "KDF_INFO",
    "MAX_BODY_SIZE",
    "MAX_SKIP",
    "MAX_SKIPPED_KEYS",
    "MESSAGE_ID_SIZE",
    "MLKEM768_CIPHERTEXT_SIZE",
    "MLKEM768_PUBLIC_KEY_SIZE",
    "PAYLOAD_VERSION",
    "SESSION_FORMAT_VERSION",
    "WIRE_VERSION",
    "X25519_KEY_SIZE",
    "BundleSignatureError",
    "CryptoError",
    "DecryptionError",
    "IdentityKeyPair",
    "IdentityMismatchError",
    "InitialMessage",
    "InvalidKeyError",
    "KeyLengthError",
    "MalformedMessageError",
    "MessageType",
    "NoSessionError",
    "OneTimePrekey",
    "OpenedMessage",
    "Payload",
    "PayloadError",
    "PqPrekey",
    "PrekeyBundle",
    "PrekeyKind",
    "PrekeyStore",
    "PublicPrekeys",
    "ReplayedMessageError",
    "Session",
    "SessionMismatchError",
    "SignedPrekey",
    "TamperedMessageError",
    "TooManySkippedMessagesError",
    "UnknownPrekeyError",
    "UnsupportedVersionError",
    "initiate_session",
    "open_message",
    "prekey_signature_message",
    "respond_to_session",
    "safety_number",
]

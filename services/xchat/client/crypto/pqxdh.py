"""PQXDH key agreement (Signal's PQXDH specification, revision 3) over our key types.

Initiator A, responder B; IK are Ed25519 identity keys used in their X25519
form, SPK the signed X25519 prekey, OPK the optional one-time X25519 prekey,
PQPK the ML-KEM-768 prekey (one-time, else last-resort), EK A's ephemeral::

    DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)
    DH4 = DH(EK_A, OPK_B)   (only if the bundle had an OPK)
    (CT, SS) = ML-KEM-768.Encaps(PQPK_B)
    SK = HKDF-SHA256(ikm = F || DH1 || DH2 || DH3 [|| DH4] || SS,
                     salt = 32 zero bytes, info = KDF_INFO, length = 32)
    F  = 32 bytes of 0xFF (X25519 domain separation, as in the spec)
    AD = Encode(IK_A) || Encode(IK_B) [|| EncodeIds(account_A, device_A, account_B, device_B)]
    Encode(IK) = 0x01 || Ed25519 public key
    EncodeIds  = u8 len(account_A) || account_A || device_A (16)
                 || u8 len(account_B) || account_B || device_B (16)

The ids are bound (issue 9) in sessions started by SDKs that know them: the
responder takes A's ids from the sealed layer's claim and its own, so a PREKEY
message replayed under other claimed ids derives another AD and fails to
authenticate. Such sessions send wire version 2 (:mod:`.wire`), so the
responder knows to bind; wire version 1 (sessions started before) keeps the
AD of the identity keys alone.

The :class:`InitialMessage` carries IK_A, EK_A, the prekey ids used and CT; it
travels in front of the first ratchet message (see :mod:`.wire`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .bundles import PrekeyBundle
from .encoding import Reader, Writer, check_length
from .errors import IdentityMismatchError, MalformedMessageError
from .identity import IdentityKeyPair
from .prekey_store import PrekeyStore
from .prekeys import check_key_id
from .primitives import (
    ED25519_PUBLIC_KEY_SIZE,
    MLKEM768_CIPHERTEXT_SIZE,
    SHARED_SECRET_SIZE,
    X25519_KEY_SIZE,
    X25519PrivateKey,
    ed25519_public_to_x25519,
    hkdf_sha256,
    mlkem_decapsulate,
    mlkem_encapsulate,
    x25519,
    x25519_generate,
    x25519_public_bytes,
)

__all__ = [
    "IDENTITY_KEY_TYPE",
    "KDF_INFO",
    "Agreement",
    "InitialMessage",
    "associated_data",
    "encode_ids",
    "encode_identity_key",
    "initiate",
    "kdf",
    "respond",
]

# Info string naming protocol, curve, hash and KEM, as the spec requires.
KDF_INFO = b"xchat_CURVE25519_SHA-256_ML-KEM-768"
# Encode() type byte for an Ed25519 identity key. Signal's 0x05 means a Curve25519
# key; we bind the Ed25519 form because that is the key the auth service registers
# and the safety number covers (the X25519 form drops the sign bit).
IDENTITY_KEY_TYPE = 0x01
_F = b"\xff" * 32
MAX_BOUND_ACCOUNT_SIZE = 32
BOUND_DEVICE_ID_SIZE = 16


def encode_identity_key(identity_public: bytes) -> bytes:
    check_length("identity key", identity_public, ED25519_PUBLIC_KEY_SIZE)
    return bytes([IDENTITY_KEY_TYPE]) + identity_public


def encode_ids(initiator_account: str, initiator_device: str, responder_account: str, responder_device: str) -> bytes:
    """EncodeIds(account_A, device_A, account_B, device_B): ASCII accounts of 1..32 bytes, 16-byte device ids."""
    w = Writer()
    for account, device in ((initiator_account, initiator_device), (responder_account, responder_device)):
        raw_account = account.encode("ascii")
        if not 0 < len(raw_account) <= MAX_BOUND_ACCOUNT_SIZE:
            raise MalformedMessageError(f"PQXDH ids: account must be 1..{MAX_BOUND_ACCOUNT_SIZE} ASCII bytes")
        try:
            raw_device = bytes.fromhex(device)
        except ValueError as exc:
            raise MalformedMessageError("PQXDH ids: device id must be hex") from exc
        check_length("PQXDH device id", raw_device, BOUND_DEVICE_ID_SIZE)
        w.u8(len(raw_account)).raw(raw_account).raw(raw_device)
    return w.getvalue()


def associated_data(initiator_identity: bytes, responder_identity: bytes, ids: bytes = b"") -> bytes:
    """AD = Encode(IK_A) || Encode(IK_B) || ids (``encode_ids``; b"" in sessions started before ids were bound)."""
    return encode_identity_key(initiator_identity) + encode_identity_key(responder_identity) + ids


def kdf(dh_outputs: list[bytes], kem_secret: bytes) -> bytes:
    """KDF(KM) of the spec with the X25519 ``F`` prefix and a zero salt."""
    ikm = _F + b"".join(dh_outputs) + kem_secret
    return hkdf_sha256(ikm, salt=bytes(32), info=KDF_INFO, length=SHARED_SECRET_SIZE)


@dataclass(frozen=True, slots=True, kw_only=True)
class InitialMessage:
    """What the responder needs to derive SK (sent in front of the first ciphertext).

    Layout: ``IK_A 32 || EK_A 32 || spk_id u32 || has_opk u8 [|| opk_id u32]
    || pq_id u32 || pq_last_resort u8 || CT 1088``.
    """

    identity_key: bytes
    ephemeral_key: bytes
    signed_prekey_id: int
    one_time_prekey_id: int | None
    pq_prekey_id: int
    pq_last_resort: bool
    kem_ciphertext: bytes

    def __post_init__(self) -> None:
        check_length("initial message identity key", self.identity_key, ED25519_PUBLIC_KEY_SIZE)
        check_length("initial message ephemeral key", self.ephemeral_key, X25519_KEY_SIZE)
        check_length("ML-KEM-768 ciphertext", self.kem_ciphertext, MLKEM768_CIPHERTEXT_SIZE)
        check_key_id(self.signed_prekey_id, "signed prekey")
        check_key_id(self.pq_prekey_id, "PQ prekey")
        if self.one_time_prekey_id is not None:
            check_key_id(self.one_time_prekey_id, "one-time prekey")

    def to_bytes(self) -> bytes:
        w = Writer().raw(self.identity_key).raw(self.ephemeral_key).u32(self.signed_prekey_id)
        w.flag(self.one_time_prekey_id is not None)
        if self.one_time_prekey_id is not None:
            w.u32(self.one_time_prekey_id)
        w.u32(self.pq_prekey_id).flag(self.pq_last_resort).raw(self.kem_ciphertext)
        return w.getvalue()

    @classmethod
    def read(cls, r: Reader) -> InitialMessage:
        identity = r.key(ED25519_PUBLIC_KEY_SIZE, "identity key")
        ephemeral = r.key(X25519_KEY_SIZE, "ephemeral key")
        spk_id = r.u32("signed prekey id")
        opk_id = r.u32("one-time prekey id") if r.flag("has_one_time_prekey") else None
        pq_id = r.u32("PQ prekey id")
        last_resort = r.flag("pq_last_resort")
        ct = r.key(MLKEM768_CIPHERTEXT_SIZE, "ML-KEM-768 ciphertext")
        return cls(
            identity_key=identity,
            ephemeral_key=ephemeral,
            signed_prekey_id=spk_id,
            one_time_prekey_id=opk_id,
            pq_prekey_id=pq_id,
            pq_last_resort=last_resort,
            kem_ciphertext=ct,
        )


@dataclass(frozen=True, slots=True)
class Agreement:
    """Result of PQXDH for one side. ``ratchet_key`` seeds the Double Ratchet.

    Initiator: ``ratchet_public`` is SPK_B (A's first DHr). Responder:
    ``ratchet_private`` is SPK_B's private key (B's first DHs), as in the spec.
    """

    shared_key: bytes
    associated_data: bytes
    ratchet_public: bytes | None
    ratchet_private: X25519PrivateKey | None


def initiate(
    our_identity: IdentityKeyPair, bundle: PrekeyBundle, *, ids: bytes = b""
) -> tuple[Agreement, InitialMessage]:
    """Initiator side: verify the bundle, derive SK, build the initial message (``ids``: ``encode_ids``)."""
    bundle.verify()
    their_ik = ed25519_public_to_x25519(bundle.identity_key, "bundle identity key")
    spk = bundle.signed_prekey.public
    ephemeral = x25519_generate()
    dh = [
        x25519(our_identity.x25519_private, spk, "signed prekey"),
        x25519(ephemeral, their_ik, "bundle identity key"),
        x25519(ephemeral, spk, "signed prekey"),
    ]
    opk = bundle.one_time_prekey
    if opk is not None:
        dh.append(x25519(ephemeral, opk.public, "one-time prekey"))
    kem_secret, kem_ciphertext = mlkem_encapsulate(bundle.pq_prekey.public, "PQ prekey")
    agreement = Agreement(
        shared_key=kdf(dh, kem_secret),
        associated_data=associated_data(our_identity.public, bundle.identity_key, ids),
        ratchet_public=spk,
        ratchet_private=None,
    )
    message = InitialMessage(
        identity_key=our_identity.public,
        ephemeral_key=x25519_public_bytes(ephemeral),
        signed_prekey_id=bundle.signed_prekey.key_id,
        one_time_prekey_id=None if opk is None else opk.key_id,
        pq_prekey_id=bundle.pq_prekey.key_id,
        pq_last_resort=bundle.pq_prekey.last_resort,
        kem_ciphertext=kem_ciphertext,
    )
    return agreement, message


def respond(
    our_identity: IdentityKeyPair, store: PrekeyStore, message: InitialMessage, *, ids: bytes = b""
) -> Agreement:
    """Responder side: look up the named prekeys and derive the same SK.

    Consumes nothing: the caller deletes one-time keys only once the first
    ratchet message has authenticated under this SK.
    """
    if store.identity.public != our_identity.public:
        raise IdentityMismatchError("prekey store belongs to another identity")
    spk = store.signed_prekey_private(message.signed_prekey_id)
    opk = (
        None
        if message.one_time_prekey_id is None
        else store.one_time_prekey_private(message.one_time_prekey_id)
    )
    pq = store.pq_prekey_private(message.pq_prekey_id, last_resort=message.pq_last_resort)
    their_ik = ed25519_public_to_x25519(message.identity_key, "initiator identity key")
    dh = [
        x25519(spk, their_ik, "initiator identity key"),
        x25519(our_identity.x25519_private, message.ephemeral_key, "ephemeral key"),
        x25519(spk, message.ephemeral_key, "ephemeral key"),
    ]
    if opk is not None:
        dh.append(x25519(opk, message.ephemeral_key, "ephemeral key"))
    kem_secret = mlkem_decapsulate(pq, message.kem_ciphertext)
    return Agreement(
        shared_key=kdf(dh, kem_secret),
        associated_data=associated_data(message.identity_key, our_identity.public, ids),
        ratchet_public=None,
        ratchet_private=spk,
    )

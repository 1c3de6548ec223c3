"""Protobuf ↔ crypto-library values, for the SDK's calls (protobuf stays here)."""

from __future__ import annotations

from xchat.client.crypto import OneTimePrekey, PqPrekey, PrekeyBundle, PublicPrekeys, SignedPrekey
from xchat.v1 import common_pb2, keys_pb2


def upload_request(public: PublicPrekeys, *, include_signed: bool = True) -> keys_pb2.UploadPrekeysRequest:
    request = keys_pb2.UploadPrekeysRequest(
        one_time_prekeys=[common_pb2.OneTimePrekey(key_id=k.key_id, public_key=k.public) for k in public.one_time_prekeys],
        pq_one_time_prekeys=[
            common_pb2.SignedPrekey(key_id=k.key_id, public_key=k.public, signature=k.signature)
            for k in public.pq_prekeys
            if not k.last_resort
        ],
    )
    if include_signed and public.signed_prekey is not None:
        spk = public.signed_prekey
        request.signed_prekey.CopyFrom(common_pb2.SignedPrekey(key_id=spk.key_id, public_key=spk.public, signature=spk.signature))
    if include_signed and public.last_resort_pq_prekey is not None:
        lr = public.last_resort_pq_prekey
        request.pq_last_resort_prekey.CopyFrom(
            common_pb2.SignedPrekey(key_id=lr.key_id, public_key=lr.public, signature=lr.signature)
        )
    return request


def bundle(pb: keys_pb2.PrekeyBundle) -> PrekeyBundle:
    """Builds and verifies a bundle; raises CryptoError naming the failed check."""
    one_time = None
    if pb.HasField("one_time_prekey"):
        one_time = OneTimePrekey(key_id=pb.one_time_prekey.key_id, public=pb.one_time_prekey.public_key)
    result = PrekeyBundle(
        identity_key=pb.identity_key,
        signed_prekey=SignedPrekey(
            key_id=pb.signed_prekey.key_id, public=pb.signed_prekey.public_key, signature=pb.signed_prekey.signature
        ),
        pq_prekey=PqPrekey(
            key_id=pb.pq_prekey.key_id,
            public=pb.pq_prekey.public_key,
            signature=pb.pq_prekey.signature,
            last_resort=pb.pq_prekey_is_last_resort,
        ),
        one_time_prekey=one_time,
    )
    result.verify()
    return result

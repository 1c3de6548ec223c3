"""gRPC servicer for keys: converts protobuf to domain calls and back.

Callers are authorised (active device) and fetches rate-limited by
``xchat.core.edge`` before these methods run; one-time key hand-out is
budgeted here (``xchat.keys.claims``).
"""

from __future__ import annotations

from typing import Any

import grpc.aio

from xchat.core.authz import require_principal
from xchat.core.errors import InvalidArgument
from xchat.core.ids import account_id, device_id
from xchat.core.rpc import unary
from xchat.keys.claims import PrekeyClaims
from xchat.keys.prekeys import MAX_PURGE_DEVICES, PrekeyDirectory, PublicPrekey, Upload
from xchat.v1 import common_pb2, keys_pb2, keys_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]


def _signed(key: common_pb2.SignedPrekey) -> PublicPrekey:
    return PublicPrekey(key.key_id, key.public_key, key.signature)


def _signed_pb(key: PublicPrekey) -> common_pb2.SignedPrekey:
    return common_pb2.SignedPrekey(key_id=key.key_id, public_key=key.public_key, signature=key.signature)


class KeysServicer(keys_pb2_grpc.KeysServicer):
    def __init__(self, directory: PrekeyDirectory, claims: PrekeyClaims) -> None:
        self._directory = directory
        self._claims = claims

    @unary
    async def UploadPrekeys(self, request: keys_pb2.UploadPrekeysRequest, context: Ctx) -> keys_pb2.UploadPrekeysResponse:
        caller = require_principal()
        upload = Upload(
            signed_prekey=_signed(request.signed_prekey) if request.HasField("signed_prekey") else None,
            one_time=tuple(PublicPrekey(k.key_id, k.public_key) for k in request.one_time_prekeys),
            pq_one_time=tuple(_signed(k) for k in request.pq_one_time_prekeys),
            pq_last_resort=_signed(request.pq_last_resort_prekey) if request.HasField("pq_last_resort_prekey") else None,
        )
        otk, pqotk = await self._directory.upload(caller.device, upload)
        return keys_pb2.UploadPrekeysResponse(one_time_prekeys=otk, pq_one_time_prekeys=pqotk)

    @unary
    async def FetchBundles(self, request: keys_pb2.FetchBundlesRequest, context: Ctx) -> keys_pb2.FetchBundlesResponse:
        caller = require_principal()
        account = account_id(request.account)
        devices = await self._directory.devices_of(account, device_id(request.device_id) if request.device_id else None)
        claim = self._claims.allow(caller.device, account, len(devices))
        bundles = await self._directory.bundles(account, devices, claim=claim)
        return keys_pb2.FetchBundlesResponse(
            bundles=[
                keys_pb2.PrekeyBundle(
                    account=b.device.account,
                    device_id=b.device.device,
                    identity_key=b.device.identity_key,
                    signed_prekey=_signed_pb(b.signed_prekey),
                    one_time_prekey=(
                        common_pb2.OneTimePrekey(key_id=b.one_time.key_id, public_key=b.one_time.public_key)
                        if b.one_time
                        else None
                    ),
                    pq_prekey=_signed_pb(b.pq_prekey),
                    pq_prekey_is_last_resort=b.pq_is_last_resort,
                )
                for b in bundles
            ]
        )

    @unary
    async def PurgeRevoked(
        self, request: keys_pb2.PurgeRevokedPrekeysRequest, context: Ctx
    ) -> keys_pb2.PurgeRevokedPrekeysResponse:
        # Anonymous (the account is deleted, its tokens dead): only revoked devices' keys go.
        if len(request.device_ids) > MAX_PURGE_DEVICES:
            raise InvalidArgument(f"device_ids: at most {MAX_PURGE_DEVICES} per call")
        purged = await self._directory.purge_revoked([device_id(d) for d in request.device_ids])
        return keys_pb2.PurgeRevokedPrekeysResponse(purged=purged)

    @unary
    async def CountPrekeys(self, request: keys_pb2.CountPrekeysRequest, context: Ctx) -> keys_pb2.CountPrekeysResponse:
        caller = require_principal()
        otk, pqotk = await self._directory.count(caller.device)
        return keys_pb2.CountPrekeysResponse(one_time_prekeys=otk, pq_one_time_prekeys=pqotk)

"""gRPC servicer for auth: converts protobuf to domain calls and back.

Authorisation and rate limits happen before these methods run
(``xchat.core.edge``): Register/Challenge/Login/Refresh are anonymous and
limited per client address; the rest run only for an active device, and
AddDevice/RevokeDevice re-read the caller's device record from the store.
"""

from __future__ import annotations

from typing import Any

import grpc.aio

from xchat.auth.accounts import Accounts, Tokens
from xchat.auth.auditstatements import AuditStatements
from xchat.auth.keylog import Entry, KeyLog
from xchat.client.crypto.auditing import AuditStatement, StatementError
from xchat.client.crypto.transparency import EpochHead
from xchat.core.errors import FailedPrecondition, NotFound
from xchat.core.authz import require_principal
from xchat.core.ids import account_id, device_id
from xchat.core.rpc import unary
from xchat.v1 import auth_pb2, auth_pb2_grpc, common_pb2

Ctx = grpc.aio.ServicerContext[Any, Any]


def _tokens(tokens: Tokens) -> auth_pb2.TokenResponse:
    return auth_pb2.TokenResponse(
        access_token=tokens.access_token,
        access_expires_at_ms=tokens.access_expires_at_ms,
        refresh_token=tokens.refresh_token,
        refresh_expires_at_ms=tokens.refresh_expires_at_ms,
        account=tokens.account,
        device_id=tokens.device,
    )


def _head(head: EpochHead) -> auth_pb2.EpochHead:
    return auth_pb2.EpochHead(
        epoch=head.epoch, map_root=head.map_root, entries_upto=head.entries_upto, time_ms=head.time_ms,
        log_root=head.log_root, key_id=head.key_id, signature=head.signature,
    )


def _entry(entry: Entry) -> auth_pb2.LogEntry:
    return auth_pb2.LogEntry(
        sequence=entry.sequence, account=entry.account, account_key=entry.account_key, version=entry.version,
        device_list=auth_pb2.SignedDeviceList(body=entry.body, signature=entry.signature),
    )


class AuthServicer(auth_pb2_grpc.AuthServicer):
    def __init__(self, accounts: Accounts, statements: AuditStatements | None = None) -> None:
        self._accounts = accounts
        self._statements = statements

    @unary
    async def Register(self, request: auth_pb2.RegisterRequest, context: Ctx) -> auth_pb2.RegisterResponse:
        account = account_id(request.account)
        device = await self._accounts.register(
            account,
            request.identity_key,
            request.signature,
            account_key=request.account_key,
            account_key_signature=request.account_key_signature,
        )
        return auth_pb2.RegisterResponse(account=account, device_id=device)

    @unary
    async def AddDevice(self, request: auth_pb2.AddDeviceRequest, context: Ctx) -> auth_pb2.RegisterResponse:
        caller = require_principal()
        device = await self._accounts.add_device(
            caller.account, request.identity_key, request.signature, request.account_signature
        )
        return auth_pb2.RegisterResponse(account=caller.account, device_id=device)

    @unary
    async def Challenge(self, request: auth_pb2.ChallengeRequest, context: Ctx) -> auth_pb2.ChallengeResponse:
        nonce, expires = await self._accounts.challenge(device_id(request.device_id))
        return auth_pb2.ChallengeResponse(nonce=nonce, expires_at_ms=expires)

    @unary
    async def Login(self, request: auth_pb2.LoginRequest, context: Ctx) -> auth_pb2.TokenResponse:
        device = device_id(request.device_id)
        return _tokens(await self._accounts.login(device, request.nonce, request.signature))

    @unary
    async def Refresh(self, request: auth_pb2.RefreshRequest, context: Ctx) -> auth_pb2.TokenResponse:
        return _tokens(await self._accounts.refresh(request.refresh_token))

    @unary
    async def RevokeDevice(self, request: auth_pb2.RevokeDeviceRequest, context: Ctx) -> auth_pb2.RevokeDeviceResponse:
        caller = require_principal()
        await self._accounts.revoke_listed(
            caller.account, device_id(request.device_id), request.device_list.body, request.device_list.signature
        )
        return auth_pb2.RevokeDeviceResponse()

    @unary
    async def ListDevices(self, request: auth_pb2.ListDevicesRequest, context: Ctx) -> auth_pb2.ListDevicesResponse:
        account = account_id(request.account)
        records = await self._accounts.list_devices(account)
        account_key, signed = await self._accounts.signed_device_list(account)
        return auth_pb2.ListDevicesResponse(
            account_key=account_key,
            device_list=auth_pb2.SignedDeviceList(body=signed.body, signature=signed.signature) if signed else None,
            devices=[
                common_pb2.Device(
                    device_id=r.device,
                    account=r.account,
                    identity_key=r.identity_key,
                    revoked=r.revoked,
                    created_at_ms=r.created_at_ms,
                )
                for r in records
            ]
        )

    @unary
    async def SetDeliveryVerifier(
        self, request: auth_pb2.SetDeliveryVerifierRequest, context: Ctx
    ) -> auth_pb2.SetDeliveryVerifierResponse:
        caller = require_principal()
        await self._accounts.set_delivery_verifier(
            caller.device, request.verifier, sealed_from_anyone=request.sealed_from_anyone
        )
        return auth_pb2.SetDeliveryVerifierResponse()

    @unary
    async def PublishDeviceList(
        self, request: auth_pb2.PublishDeviceListRequest, context: Ctx
    ) -> auth_pb2.PublishDeviceListResponse:
        caller = require_principal()
        version = await self._accounts.publish_device_list(
            caller.account, request.device_list.body, request.device_list.signature
        )
        return auth_pb2.PublishDeviceListResponse(version=version)

    @unary
    async def PutProvisioning(
        self, request: auth_pb2.PutProvisioningRequest, context: Ctx
    ) -> auth_pb2.PutProvisioningResponse:
        require_principal()
        expires = await self._accounts.provisioning.put(request.rendezvous_id, request.ciphertext)
        return auth_pb2.PutProvisioningResponse(expires_at_ms=expires)

    @unary
    async def TakeProvisioning(
        self, request: auth_pb2.TakeProvisioningRequest, context: Ctx
    ) -> auth_pb2.TakeProvisioningResponse:
        # Anonymous: the new device has no token; the rendezvous id is 128 random bits.
        ciphertext = await self._accounts.provisioning.take(request.rendezvous_id)
        return auth_pb2.TakeProvisioningResponse(ciphertext=ciphertext)

    @unary
    async def DeleteAccount(
        self, request: auth_pb2.DeleteAccountRequest, context: Ctx
    ) -> auth_pb2.DeleteAccountResponse:
        caller = require_principal()
        devices, held_until = await self._accounts.delete_account(caller.account, request.signature)
        return auth_pb2.DeleteAccountResponse(device_ids=list(devices), name_held_until_ms=held_until)

    def _keylog(self) -> KeyLog:
        if self._accounts.keylog is None:
            raise FailedPrecondition("key transparency is not enabled on this auth process")
        return self._accounts.keylog

    @unary
    async def LookupKey(self, request: auth_pb2.LookupKeyRequest, context: Ctx) -> auth_pb2.LookupKeyResponse:
        require_principal()
        account = account_id(request.account)
        known = request.known_epoch if request.HasField("known_epoch") else None
        found = await self._keylog().lookup(account, known)
        reply = auth_pb2.LookupKeyResponse(
            head=_head(found.head),
            directory_key=found.directory_key,
            found=found.leaf is not None,
            map_siblings=list(found.map_proof.siblings),
            path_leaf_key=found.map_proof.leaf_key,
            path_leaf_value=found.map_proof.leaf_value,
            consistency_proof=found.consistency,
            head_inclusion_proof=found.head_inclusion,
            epoch_interval_ms=found.interval_ms,
        )
        if found.leaf is not None:
            reply.account_key = found.leaf.account_key
            reply.version = found.leaf.version
            reply.device_list.CopyFrom(auth_pb2.SignedDeviceList(body=found.leaf.body, signature=found.leaf.signature))
        if request.audit_statements and self._statements is not None:
            reply.audit_statements.extend(await self._audited(found.head.epoch))
        return reply

    async def _audited(self, head_epoch: int) -> list[auth_pb2.AuditStatement]:
        """Each auditor's latest statement with the consistency proof between its epoch and the head's."""
        assert self._statements is not None
        out = []
        for raw in await self._statements.latest():
            try:
                epoch = AuditStatement.parse(raw).epoch
            except StatementError:
                epoch = head_epoch  # served as stored: the client refuses what does not parse
            proof: list[bytes] = []
            if epoch != head_epoch:
                try:
                    proof = await self._keylog().prove(min(epoch, head_epoch), max(epoch, head_epoch))
                except NotFound:
                    continue  # audited beyond what even the stream leader holds here: not provable now
            out.append(auth_pb2.AuditStatement(statement=raw, consistency_proof=proof))
        return out

    @unary
    async def ProveConsistency(
        self, request: auth_pb2.ProveConsistencyRequest, context: Ctx
    ) -> auth_pb2.ProveConsistencyResponse:
        require_principal()
        proof = await self._keylog().prove(request.first_epoch, request.second_epoch)
        return auth_pb2.ProveConsistencyResponse(proof=proof)

    @unary
    async def PublishAuditStatement(
        self, request: auth_pb2.PublishAuditStatementRequest, context: Ctx
    ) -> auth_pb2.PublishAuditStatementResponse:
        # Anonymous: the statement's signature by a listed auditor key is the authorisation.
        if self._statements is None:
            raise FailedPrecondition("auditor statements are not kept by this auth process")
        await self._statements.publish(bytes(request.statement))
        return auth_pb2.PublishAuditStatementResponse()

    @unary
    async def AuditLog(self, request: auth_pb2.AuditLogRequest, context: Ctx) -> auth_pb2.AuditLogResponse:
        # Anonymous: an auditor needs no account; limited per client address by the edge.
        heads, entries, keys = await self._keylog().audit_page(request.from_epoch, request.after_entry, request.max_epochs)
        return auth_pb2.AuditLogResponse(
            heads=[_head(h) for h in heads],
            entries=[_entry(e) for e in entries],
            directory_keys=[auth_pb2.DirectoryKey(key_id=k, public_key=v) for k, v in keys.items()],
        )

"""gRPC servicer for auth: converts protobuf to domain calls and back."""

from __future__ import annotations

from typing import Any

import grpc.aio

from xchat.auth.accounts import Accounts, Tokens
from xchat.core.ids import account_id, device_id
from xchat.core.ratelimit import RateLimiter
from xchat.core.rpc import principal_of, unary
from xchat.core.tokens import TokenVerifier
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


class AuthServicer(auth_pb2_grpc.AuthServicer):
    def __init__(self, accounts: Accounts, verifier: TokenVerifier, *, limiter: RateLimiter) -> None:
        self._accounts = accounts
        self._verifier = verifier
        # Unauthenticated calls write to the store: bound them per caller address.
        self._limiter = limiter

    def _limit(self, context: Ctx) -> None:
        peer = context.peer() or "unknown"
        # "ipv4:1.2.3.4:5678" → the address without the port.
        self._limiter.take(peer.rsplit(":", 1)[0])

    @unary
    async def Register(self, request: auth_pb2.RegisterRequest, context: Ctx) -> auth_pb2.RegisterResponse:
        self._limit(context)
        account = account_id(request.account)
        device = await self._accounts.register(account, request.identity_key, request.signature)
        return auth_pb2.RegisterResponse(account=account, device_id=device)

    @unary
    async def AddDevice(self, request: auth_pb2.AddDeviceRequest, context: Ctx) -> auth_pb2.RegisterResponse:
        caller = principal_of(context, self._verifier)
        device = await self._accounts.add_device(caller.account, request.identity_key, request.signature)
        return auth_pb2.RegisterResponse(account=caller.account, device_id=device)

    @unary
    async def Challenge(self, request: auth_pb2.ChallengeRequest, context: Ctx) -> auth_pb2.ChallengeResponse:
        self._limit(context)
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
        caller = principal_of(context, self._verifier)
        await self._accounts.revoke(caller.account, device_id(request.device_id))
        return auth_pb2.RevokeDeviceResponse()

    @unary
    async def ListDevices(self, request: auth_pb2.ListDevicesRequest, context: Ctx) -> auth_pb2.ListDevicesResponse:
        principal_of(context, self._verifier)
        records = await self._accounts.list_devices(account_id(request.account))
        return auth_pb2.ListDevicesResponse(
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

"""Access tokens for one device: login, refresh, and calls that carry a valid token.

Shared by the facade (``Client``), the send path (``_sending``) and the
receive path (``_receiving``). A token is renewed ``TOKEN_MARGIN_MS`` before it
expires, by one caller at a time; a call refused as UNAUTHENTICATED drops the
token and logs in again once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc.aio

from xchat.client._sessions import SessionBook
from xchat.client._state import LocalState
from xchat.client._transport import Transport, metadata
from xchat.client.errors import NotRegistered, RequestRejected
from xchat.statements import login_statement
from xchat.v1 import auth_pb2, auth_pb2_grpc

# Renew the access token this long before it expires.
TOKEN_MARGIN_MS = 30_000
T = TypeVar("T")
Invoke = Callable[[grpc.aio.Channel, float, tuple[tuple[str, Any], ...]], Awaitable[T]]


class Tokens:
    def __init__(self, state: LocalState, book: SessionBook, transport: Transport) -> None:
        self._state = state
        self._book = book
        self._transport = transport
        self._access_token = ""
        self._access_expires_ms = 0
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return bool(self._access_token) and self._access_expires_ms - TOKEN_MARGIN_MS > time.time() * 1000

    async def token(self) -> str:
        if self._fresh():
            return self._access_token
        async with self._lock:
            if not self._fresh():
                await self._login()
        return self._access_token

    def invalidate(self) -> None:
        """The server refused the token (revoked, key rotated): the next call logs in again."""
        self._access_token = ""

    def _device(self) -> str:
        value = self._state.get_meta("device_id")
        if value is None:
            raise NotRegistered("this client has no device yet: call register()")
        return value.decode()

    async def _login(self) -> None:
        identity = self._book.identity
        device = self._device()
        refresh = self._state.get_meta("refresh_token")
        if refresh:
            request = auth_pb2.RefreshRequest(refresh_token=refresh.decode())
            try:
                reply = await self._transport.call(
                    lambda ch, t: auth_pb2_grpc.AuthStub(ch).Refresh(request, timeout=t), service="auth"
                )
                self._store(reply)
                return
            except RequestRejected:
                pass  # expired or used: log in with the identity key instead

        async def login(channel: grpc.aio.Channel, timeout: float) -> auth_pb2.TokenResponse:
            stub = auth_pb2_grpc.AuthStub(channel)
            challenge = await stub.Challenge(auth_pb2.ChallengeRequest(device_id=device), timeout=timeout)
            signature = identity.sign(login_statement(device, challenge.nonce))
            reply: auth_pb2.TokenResponse = await stub.Login(
                auth_pb2.LoginRequest(device_id=device, nonce=challenge.nonce, signature=signature), timeout=timeout
            )
            return reply

        self._store(await self._transport.call(login, service="auth"))

    def _store(self, reply: auth_pb2.TokenResponse) -> None:
        self._access_token = reply.access_token
        self._access_expires_ms = reply.access_expires_at_ms
        self._state.set_meta("refresh_token", reply.refresh_token.encode())

    async def authed(self, invoke: Invoke[T], *, service: str) -> T:
        """A unary call with a valid token, failing over like ``Transport.call``; logs in again once if refused."""
        for attempt in range(2):
            token = await self.token()
            try:
                return await self._transport.call(lambda ch, t: invoke(ch, t, metadata(token)), service=service)
            except RequestRejected as exc:
                if exc.code != "UNAUTHENTICATED" or attempt:
                    raise
                self.invalidate()
        raise AssertionError("unreachable")

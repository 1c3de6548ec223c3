"""A raw gRPC caller for the service tests: real stubs, no SDK, no crypto."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import grpc.aio
import nacl.signing
import pytest

from xchat.mesh.local import LocalMesh
from xchat.statements import login_statement, prekey_statement, register_statement
from xchat.v1 import auth_pb2, auth_pb2_grpc, common_pb2, keys_pb2, keys_pb2_grpc, mailbox_pb2_grpc, relay_pb2_grpc


@dataclass
class RawDevice:
    """A registered, logged-in device talking to one region."""

    channel: grpc.aio.Channel
    account: str
    key: nacl.signing.SigningKey
    device_id: str = ""
    token: str = ""
    refresh: str = ""
    next_key_id: int = field(default=1)

    @property
    def auth(self) -> auth_pb2_grpc.AuthStub:
        return auth_pb2_grpc.AuthStub(self.channel)

    @property
    def keys(self) -> keys_pb2_grpc.KeysStub:
        return keys_pb2_grpc.KeysStub(self.channel)

    @property
    def relay(self) -> relay_pb2_grpc.RelayStub:
        return relay_pb2_grpc.RelayStub(self.channel)

    @property
    def mailbox(self) -> mailbox_pb2_grpc.MailboxStub:
        return mailbox_pb2_grpc.MailboxStub(self.channel)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    async def register(self) -> RawDevice:
        ik = bytes(self.key.verify_key)
        reply = await self.auth.Register(
            auth_pb2.RegisterRequest(
                account=self.account, identity_key=ik, signature=self.key.sign(register_statement(self.account, ik)).signature
            )
        )
        self.device_id = reply.device_id
        return await self.login()

    async def login(self) -> RawDevice:
        challenge = await self.auth.Challenge(auth_pb2.ChallengeRequest(device_id=self.device_id))
        tokens = await self.auth.Login(
            auth_pb2.LoginRequest(
                device_id=self.device_id,
                nonce=challenge.nonce,
                signature=self.key.sign(login_statement(self.device_id, challenge.nonce)).signature,
            )
        )
        self.token, self.refresh = tokens.access_token, tokens.refresh_token
        return self

    def signed(self, kind: int, size: int) -> common_pb2.SignedPrekey:
        key_id = self.next_key_id
        self.next_key_id += 1
        public = secrets.token_bytes(size)
        sig = self.key.sign(prekey_statement(kind, key_id, public)).signature
        return common_pb2.SignedPrekey(key_id=key_id, public_key=public, signature=sig)

    async def publish_keys(self, one_time: int = 5, pq: int = 2) -> keys_pb2.UploadPrekeysResponse:
        otks = []
        for _ in range(one_time):
            otks.append(common_pb2.OneTimePrekey(key_id=self.next_key_id, public_key=secrets.token_bytes(32)))
            self.next_key_id += 1
        return await self.keys.UploadPrekeys(
            keys_pb2.UploadPrekeysRequest(
                signed_prekey=self.signed(1, 32),
                one_time_prekeys=otks,
                pq_one_time_prekeys=[self.signed(2, 1184) for _ in range(pq)],
                pq_last_resort_prekey=self.signed(3, 1184),
            ),
            metadata=self.md,
        )


@pytest.fixture
async def connect(mesh: LocalMesh) -> AsyncIterator[object]:
    channels: list[grpc.aio.Channel] = []

    async def make(region: str = "a", account: str | None = None, *, register: bool = True) -> RawDevice:
        channel = grpc.aio.insecure_channel(mesh.regions[region].endpoint)
        channels.append(channel)
        device = RawDevice(channel, account or f"u{secrets.token_hex(6)}", nacl.signing.SigningKey.generate())
        return await device.register() if register else device

    yield make
    for channel in channels:
        await channel.close()

"""Token keys rotate under a running mesh, without a restart (issue 17, docs/security.md "Access tokens").

A three-region mesh whose service processes read their token keys from a
Secret volume written the way the kubelet writes one (``tests/secret_volume``:
a symlink swap, new inodes). The rotation follows the documented order:
publish the new public key, switch the signing key, drop the old public key.
A client logged in before the rotation keeps using its token throughout, and
its open Sync stream keeps running; new logins get the new key id; every
region verifies both; a garbage update is refused with the previous keys kept
and one log line; after the drop, a still-unexpired token of the old key
(forged by whoever kept that key) is refused UNAUTHENTICATED everywhere,
including where it had been accepted and remembered a moment before, and the
Sync streams opened with old-key tokens end UNAUTHENTICATED (within
``XCHAT_TOKEN_KEY_STREAM_END_S``) while one opened with the new key stays.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time

import grpc
import grpc.aio
import nacl.signing
import pytest

from tests.secret_volume import SecretVolume
from tests.services.conftest import RawDevice
from xchat.core.ids import AccountId, DeviceId
from xchat.core.tokens import TokenSigner, key_id
from xchat.mesh.local import LocalMesh
from xchat.v1 import auth_pb2, keys_pb2, mailbox_pb2, mailbox_pb2_grpc

RELOAD_S = 0.2
# Long enough that no token of the test expires on its own: what stops working is the drop.
LIFETIME_MS = 600_000
REFUSED = "token keys not reloaded"
STREAM_END_S = 0.5


class _OpenSync:
    """A raw Mailbox.Sync held open with one token; ``code`` is how it ended (None while open)."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.backlog_done = asyncio.Event()
        self._requests: asyncio.Queue[mailbox_pb2.SyncRequest | None] = asyncio.Queue()
        self._requests.put_nowait(mailbox_pb2.SyncRequest())
        call = mailbox_pb2_grpc.MailboxStub(channel).Sync(self._outgoing(), metadata=(("authorization", f"Bearer {token}"),))
        self._task = asyncio.create_task(self._read(call))

    async def _outgoing(self):
        while (request := await self._requests.get()) is not None:
            yield request

    async def _read(self, call) -> None:
        try:
            async for response in call:
                if response.HasField("backlog_done"):
                    self.backlog_done.set()
            self.code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            self.code, self.details = exc.code(), exc.details() or ""

    async def close(self) -> None:
        self._requests.put_nowait(None)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _kid(token: str) -> str:
    claims = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["kid"])


def _forge(key: nacl.signing.SigningKey, device: RawDevice) -> str:
    """A token for ``device`` signed by ``key``, as anyone holding that key can make one."""
    signer = TokenSigner(signing_key=key, lifetime_ms=LIFETIME_MS)
    return signer.issue(AccountId(device.account), DeviceId(device.device_id))[0]


async def _calls(device: RawDevice, channel: grpc.aio.Channel, token: str) -> grpc.StatusCode:
    """An authenticated call to each service of one region (the edge of keys and auth, and mailbox's own
    check); OK only if all three accepted ``token``, else the first refusal's code."""
    probe = RawDevice(channel, device.account, device.key, device.device_id, token)
    try:
        await probe.keys.CountPrekeys(keys_pb2.CountPrekeysRequest(), metadata=probe.md)
        await probe.auth.ListDevices(auth_pb2.ListDevicesRequest(account=device.account), metadata=probe.md)
        await probe.mailbox.Ack(mailbox_pb2.AckRequest(), metadata=probe.md)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _everywhere(device: RawDevice, channels: dict[str, grpc.aio.Channel], token: str) -> dict[str, grpc.StatusCode]:
    return {region: await _calls(device, channel, token) for region, channel in channels.items()}


async def _until(check, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(RELOAD_S)


async def _login_kid(device: RawDevice, channel: grpc.aio.Channel) -> str:
    fresh = RawDevice(channel, device.account, device.key, device.device_id)
    return _kid((await fresh.login()).token)


def _refusals(mesh: LocalMesh) -> dict[str, int]:
    out = {}
    for name, region in mesh.regions.items():
        assert region.services is not None
        out[name] = region.services.log_path.read_text().count(REFUSED)
    return out


@pytest.mark.slow
async def test_token_keys_rotate_on_a_running_mesh_without_a_restart(fresh_mesh_factory, tmp_path) -> None:
    old, new = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    old_pub, new_pub = _b64(bytes(old.verify_key)), _b64(bytes(new.verify_key))
    old_kid, new_kid = key_id(old.verify_key), key_id(new.verify_key)
    volume = SecretVolume(tmp_path / "token")
    volume.project({"signing.key": _b64(bytes(old)), "public.key": old_pub})
    mesh: LocalMesh = fresh_mesh_factory(extra_env={
        "XCHAT_TOKEN_SIGNING_KEY_FILE": str(volume.file("signing.key")),
        "XCHAT_TOKEN_PUBLIC_KEY_FILE": str(volume.file("public.key")),
        "XCHAT_TOKEN_KEY_RELOAD_S": str(RELOAD_S),
        "XCHAT_ACCESS_TOKEN_LIFETIME_MS": str(LIFETIME_MS),
        "XCHAT_CALL_RATE": "1000", "XCHAT_CALL_BURST": "10000",
        "XCHAT_TOKEN_KEY_STREAM_END_S": str(STREAM_END_S),
    })
    pids = {name: r.services.pid for name, r in mesh.regions.items() if r.services is not None}
    channels = {name: grpc.aio.insecure_channel(r.endpoint) for name, r in mesh.regions.items()}
    streams: list[_OpenSync] = []
    try:
        alice = await RawDevice(channels["a"], f"u{secrets.token_hex(6)}", nacl.signing.SigningKey.generate()).register()
        before = alice.token  # the logged-in client's token, kept throughout
        assert _kid(before) == old_kid
        all_ok = {name: grpc.StatusCode.OK for name in channels}
        assert await _everywhere(alice, channels, before) == all_ok
        # The client is online: a Sync in every region, opened with the old key's token.
        old_streams = [_OpenSync(channel, before) for channel in channels.values()]
        streams += old_streams
        for stream in old_streams:
            await asyncio.wait_for(stream.backlog_done.wait(), 10)

        # 1. Publish: every verifier accepts the new key; auth still signs with the old one.
        volume.project({"signing.key": _b64(bytes(old)), "public.key": f"{old_pub}\n{new_pub}\n"})
        probe = _forge(new, alice)

        async def new_key_accepted() -> bool:
            return await _everywhere(alice, channels, probe) == all_ok

        await _until(new_key_accepted, "every region to accept the new public key")
        assert {await _login_kid(alice, ch) for ch in channels.values()} == {old_kid}

        # 2. Switch: auth signs with the new key; the old key stays accepted.
        volume.project({"signing.key": _b64(bytes(new)), "public.key": f"{new_pub}\n{old_pub}\n"})

        async def new_logins_get_the_new_kid() -> bool:
            return {await _login_kid(alice, ch) for ch in channels.values()} == {new_kid}

        await _until(new_logins_get_the_new_kid, "every region's auth to sign with the new key")
        after = (await RawDevice(channels["b"], alice.account, alice.key, alice.device_id).login()).token
        assert await _everywhere(alice, channels, before) == all_ok, "the old token still works until it expires"
        assert await _everywhere(alice, channels, after) == all_ok, "every region verifies the new key"
        new_stream = _OpenSync(channels["a"], after)
        streams.append(new_stream)
        await asyncio.wait_for(new_stream.backlog_done.wait(), 10)
        assert [s.code for s in old_streams] == [None] * len(old_streams), "the Syncs stay open through the switch"

        # 3. A garbage update (not base64, a truncated key) is refused: the keys stay as they were.
        refused_before = _refusals(mesh)
        volume.project({"signing.key": "not a key\n", "public.key": f"{new_pub}\n{old_pub[:20]}\n"})
        await asyncio.sleep(RELOAD_S * 10)
        assert await _everywhere(alice, channels, before) == all_ok
        assert await _everywhere(alice, channels, after) == all_ok
        assert {await _login_kid(alice, ch) for ch in channels.values()} == {new_kid}
        # One line per process for the bad content, however many polls saw it.
        assert {r: n - refused_before[r] for r, n in _refusals(mesh).items()} == {r: 1 for r in channels}
        lines = [line for line in mesh.regions["a"].services.log_path.read_text().splitlines() if REFUSED in line]
        assert "XCHAT_TOKEN_SIGNING_KEY_FILE" in lines[-1] and f"keeping signing key {new_kid}" in lines[-1]
        assert "Traceback" not in mesh.regions["a"].services.log_path.read_text()

        # 4. Drop the old key (in production: once its last tokens have expired).
        volume.project({"signing.key": _b64(bytes(new)), "public.key": f"{new_pub}\n"})
        stolen = _forge(old, alice)  # unexpired, signed by the dropped key
        refused = {name: grpc.StatusCode.UNAUTHENTICATED for name in channels}

        async def old_key_refused() -> bool:
            return await _everywhere(alice, channels, stolen) == refused

        await _until(old_key_refused, "every region to refuse the dropped key")
        # Also the token every region had accepted (and remembered) a moment ago.
        assert await _everywhere(alice, channels, before) == refused
        assert await _everywhere(alice, channels, after) == all_ok
        probe_refused = RawDevice(channels["c"], alice.account, alice.key, alice.device_id, stolen)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await probe_refused.keys.CountPrekeys(keys_pb2.CountPrekeysRequest(), metadata=probe_refused.md)
        assert "unknown key" in (info.value.details() or "")
        # The Syncs authenticated by the dropped key end (spread over STREAM_END_S); the new one stays.
        async def old_streams_ended() -> bool:
            return all(s.code is not None for s in old_streams)

        await _until(old_streams_ended, "the old key's Syncs to end", timeout=STREAM_END_S + 10)
        assert {s.code for s in old_streams} == {grpc.StatusCode.UNAUTHENTICATED}
        assert "retired" in old_streams[0].details
        assert new_stream.code is None
        # Same processes throughout: nothing restarted.
        assert {name: r.services.pid for name, r in mesh.regions.items() if r.services is not None} == pids
    finally:
        for stream in streams:
            await stream.close()
        for channel in channels.values():
            await channel.close()

"""Auth's checks on account keys, signed device lists and provisioning (docs/adr/0011), over raw gRPC.

Defence in depth: the SDK trusts only lists its pinned account key signed, so
these refusals are what keeps an honest server from storing (and handing
out) a list an SDK would refuse, and what keeps a token alone from changing
an account's devices.
"""

from __future__ import annotations

import secrets

import grpc
import nacl.signing

from xchat.statements import DeviceListBody, add_device_statement, device_list_statement, register_statement
from xchat.v1 import auth_pb2


async def _code(awaitable: object) -> str:
    try:
        await awaitable  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err.code().name
    return "OK"


def _signed(key: nacl.signing.SigningKey, account: str, version: int, devices: dict[str, bytes]) -> auth_pb2.SignedDeviceList:
    body = DeviceListBody(account, version, tuple(sorted(devices.items()))).encode()
    return auth_pb2.SignedDeviceList(body=body, signature=key.sign(device_list_statement(body)).signature)


async def _keyed(connect, region: str = "a"):
    """A raw device registered with an account key; returns (device, account key)."""
    device = await connect(region, register=False)
    account_key = nacl.signing.SigningKey.generate()
    ak, ik = bytes(account_key.verify_key), bytes(device.key.verify_key)
    reply = await device.auth.Register(
        auth_pb2.RegisterRequest(
            account=device.account,
            identity_key=ik,
            signature=device.key.sign(register_statement(device.account, ik)).signature,
            account_key=ak,
            account_key_signature=account_key.sign(register_statement(device.account, ak)).signature,
        )
    )
    device.device_id = reply.device_id
    return await device.login(), account_key


async def test_register_needs_proof_of_the_account_key(connect) -> None:
    device = await connect("a", register=False)
    ik, ak = bytes(device.key.verify_key), secrets.token_bytes(32)
    request = auth_pb2.RegisterRequest(
        account=device.account,
        identity_key=ik,
        signature=device.key.sign(register_statement(device.account, ik)).signature,
        account_key=ak,
        account_key_signature=device.key.sign(register_statement(device.account, ak)).signature,  # not ak's
    )
    assert await _code(device.auth.Register(request)) == "INVALID_ARGUMENT"


async def test_published_lists_are_checked_and_only_grow(connect) -> None:
    owner, account_key = await _keyed(connect)
    me = {owner.device_id: bytes(owner.key.verify_key)}
    publish = owner.auth.PublishDeviceList
    ok = await publish(auth_pb2.PublishDeviceListRequest(device_list=_signed(account_key, owner.account, 1, me)), metadata=owner.md)
    assert ok.version == 1
    listed = await owner.auth.ListDevices(auth_pb2.ListDevicesRequest(account=owner.account), metadata=owner.md)
    assert listed.account_key == bytes(account_key.verify_key) and listed.device_list.body
    ok = await publish(auth_pb2.PublishDeviceListRequest(device_list=_signed(account_key, owner.account, 2, me)), metadata=owner.md)
    assert ok.version == 2

    other, other_key = await _keyed(connect, "b")
    stranger = nacl.signing.SigningKey.generate()
    cases = {
        # an older version (a rollback), or another list with the stored version: only a higher
        # version is stored (the stored list itself again is an idempotent retry)
        "older version": (_signed(account_key, owner.account, 1, me), "FAILED_PRECONDITION"),
        "same version, other list": (_signed(account_key, owner.account, 2, {}), "FAILED_PRECONDITION"),
        # signed by a key that is not the account's
        "foreign signature": (_signed(stranger, owner.account, 3, me), "INVALID_ARGUMENT"),
        # another account's list, signed by its own key, published with our token
        "other account": (_signed(other_key, other.account, 3, {other.device_id: bytes(other.key.verify_key)}), "INVALID_ARGUMENT"),
        # a device of another account, or our device under another key
        "foreign device": (_signed(account_key, owner.account, 3, {**me, other.device_id: bytes(other.key.verify_key)}), "INVALID_ARGUMENT"),
        "wrong key": (_signed(account_key, owner.account, 3, {owner.device_id: secrets.token_bytes(32)}), "INVALID_ARGUMENT"),
        "garbage body": (auth_pb2.SignedDeviceList(body=b"\x01junk", signature=account_key.sign(device_list_statement(b"\x01junk")).signature), "INVALID_ARGUMENT"),
    }
    seen = {
        name: await _code(publish(auth_pb2.PublishDeviceListRequest(device_list=signed), metadata=owner.md))
        for name, (signed, _) in cases.items()
    }
    assert seen == {name: expected for name, (_, expected) in cases.items()}
    ok = await publish(auth_pb2.PublishDeviceListRequest(device_list=_signed(account_key, owner.account, 5, me)), metadata=owner.md)
    assert ok.version == 5


async def test_adding_or_revoking_a_device_needs_the_account_key(connect) -> None:
    owner, account_key = await _keyed(connect)
    newcomer = nacl.signing.SigningKey.generate()
    ik = bytes(newcomer.verify_key)
    add = auth_pb2.AddDeviceRequest(identity_key=ik, signature=newcomer.sign(register_statement(owner.account, ik)).signature)
    assert await _code(owner.auth.AddDevice(add, metadata=owner.md)) == "PERMISSION_DENIED"
    add.account_signature = account_key.sign(add_device_statement(owner.account, ik)).signature
    added = (await owner.auth.AddDevice(add, metadata=owner.md)).device_id

    both = {owner.device_id: bytes(owner.key.verify_key), added: ik}
    await owner.auth.PublishDeviceList(auth_pb2.PublishDeviceListRequest(device_list=_signed(account_key, owner.account, 1, both)), metadata=owner.md)
    revoke = auth_pb2.RevokeDeviceRequest(device_id=added)
    assert await _code(owner.auth.RevokeDevice(revoke, metadata=owner.md)) == "PERMISSION_DENIED"  # no list
    revoke.device_list.CopyFrom(_signed(account_key, owner.account, 2, both))
    assert await _code(owner.auth.RevokeDevice(revoke, metadata=owner.md)) == "INVALID_ARGUMENT"  # still listed
    revoke.device_list.CopyFrom(_signed(account_key, owner.account, 2, {owner.device_id: bytes(owner.key.verify_key)}))
    assert await _code(owner.auth.RevokeDevice(revoke, metadata=owner.md)) == "OK"
    listed = await owner.auth.ListDevices(auth_pb2.ListDevicesRequest(account=owner.account), metadata=owner.md)
    assert {d.device_id: d.revoked for d in listed.devices} == {owner.device_id: False, added: True}


async def test_provisioning_is_single_use_and_bounded(connect) -> None:
    owner = await connect("a")
    anonymous = await connect("c", register=False)
    rendezvous = secrets.token_bytes(16)
    put = auth_pb2.PutProvisioningRequest(rendezvous_id=rendezvous, ciphertext=b"sealed")
    assert await _code(owner.auth.PutProvisioning(put, metadata=owner.md)) == "OK"
    assert await _code(owner.auth.PutProvisioning(put, metadata=owner.md)) == "ALREADY_EXISTS"
    too_big = auth_pb2.PutProvisioningRequest(rendezvous_id=secrets.token_bytes(16), ciphertext=bytes(4097))
    assert await _code(owner.auth.PutProvisioning(too_big, metadata=owner.md)) == "INVALID_ARGUMENT"
    short_id = auth_pb2.PutProvisioningRequest(rendezvous_id=bytes(15), ciphertext=b"x")
    assert await _code(owner.auth.PutProvisioning(short_id, metadata=owner.md)) == "INVALID_ARGUMENT"

    take = auth_pb2.TakeProvisioningRequest(rendezvous_id=rendezvous)
    assert (await anonymous.auth.TakeProvisioning(take)).ciphertext == b"sealed"  # no token needed
    assert await _code(anonymous.auth.TakeProvisioning(take)) == "NOT_FOUND"  # once
    unknown = auth_pb2.TakeProvisioningRequest(rendezvous_id=secrets.token_bytes(16))
    assert await _code(anonymous.auth.TakeProvisioning(unknown)) == "NOT_FOUND"

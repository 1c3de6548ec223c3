"""Unrestricted unidentified delivery through the SDK on a real mesh (docs/adr/0009).

A device that accepts sealed sends from anyone (``Client.accept_sealed_from_anyone``)
gets even a stranger's first message sealed: relay never learns the sender.
Without the opt-in a sealed send without the key is refused exactly as before
and the SDK's first message goes authenticated. A stranger flooding an
opted-in device is limited per recipient on a budget of its own: the
device's contacts and authenticated senders are unaffected.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import grpc
import grpc.aio
import pytest

from xchat.client import Client, Message, ServiceUnavailable
from xchat.mesh.local import LocalMesh
from xchat.v1 import relay_pb2, relay_pb2_grpc

STRANGER_BURST = 5


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _next(messages, timeout: float = 15.0) -> Message:
    return await asyncio.wait_for(anext(messages), timeout)


class _NoToken:
    """Stands in for the sender's access tokens on the send path: a sealed send never asks for one."""

    async def token(self) -> str:
        raise ServiceUnavailable("the send path asked for an access token")

    def invalidate(self) -> None:
        pass


@pytest.fixture
def open_mesh(fresh_mesh_factory) -> LocalMesh:
    return fresh_mesh_factory(
        extra_env={
            "XCHAT_LOG_FORMAT": "json",
            "XCHAT_LOG_LEVEL": "debug",
            "XCHAT_STRANGER_RATE": "0.2",
            "XCHAT_STRANGER_BURST": str(STRANGER_BURST),
            # Hostile clients below come "through a gateway" from addresses of their choosing.
            "XCHAT_TRUSTED_PROXY_HEADER": "x-forwarded-for",
            "XCHAT_TRUSTED_PROXIES": "127.0.0.1/32",
        }
    )


def _relay_calls(mesh: LocalMesh) -> list[dict[str, object]]:
    """Every relay access-log line of the mesh (json, debug level)."""
    lines = []
    for region in mesh.regions:
        for line in (mesh.workdir / "logs" / f"services-{region}.log").read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if str(record.get("method", "")).startswith("/xchat.v1.Relay/"):
                    lines.append(record)
    return lines


async def _relay_calls_after(mesh: LocalMesh, before: int, count: int) -> list[dict[str, object]]:
    """The relay calls logged after the first ``before``, once there are ``count`` (bounded wait:
    a process writes its access line when the call ends, maybe after the client has its answer)."""
    deadline = asyncio.get_running_loop().time() + 10
    while len(calls := _relay_calls(mesh)[before:]) < count:
        assert asyncio.get_running_loop().time() < deadline, calls
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # and nothing more follows
    return _relay_calls(mesh)[before:]


async def _sealed_flood(mesh: LocalMesh, to: str, count: int, key: bytes = b"", *, via: str | None = None) -> list[str]:
    """A hostile client's raw SendSealed of ``count`` envelopes in one call: each one's status name."""
    requests = [
        relay_pb2.SendRequest(recipient_device_id=to, message_id=secrets.token_bytes(16), ciphertext=b"spam", delivery_key=key)
        for _ in range(count)
    ]

    async def batches():
        yield relay_pb2.SendBatch(envelopes=requests)

    names = {c.value[0]: c.name for c in grpc.StatusCode}
    async with grpc.aio.insecure_channel(mesh.regions["a"].endpoint) as channel:
        out: list[str] = []
        metadata = (("x-forwarded-for", via),) if via else None
        async for result in relay_pb2_grpc.RelayStub(channel).SendSealed(batches(), metadata=metadata):
            out += [names[r.error_code] for r in result.results]
        return out


async def test_a_strangers_first_message_to_an_opted_in_device_is_sealed(open_mesh: LocalMesh, tmp_path: Path) -> None:
    mesh = open_mesh
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("b")
    ) as bob, await Client.open(tmp_path / "carol.db", mesh.endpoints("c")) as carol:
        alice_name, bob_name, carol_name = _name("alice"), _name("bob"), _name("carol")
        await alice.register(alice_name)
        await bob.register(bob_name)
        await carol.register(carol_name)
        await bob.accept_sealed_from_anyone()

        # bob's and carol's automatic delivered receipts would be relay calls of their own
        # among the ones this test counts: held back here (they are messages to alice).
        async def hold_receipt(account: str, content_type: str, body: bytes) -> None:
            return None

        for recipient in (bob, carol):
            recipient._conversations._send_control = hold_receipt  # type: ignore[method-assign]

        # alice has never heard from bob: no delivery key. Her send path gets no token at all.
        alice._sender._tokens = _NoToken()  # type: ignore[assignment]
        before = len(_relay_calls(mesh))
        await alice.send(bob_name, "first contact, sealed")
        bob_inbox = bob.messages()
        message = await _next(bob_inbox)
        assert message.text == "first contact, sealed" and message.sender_account == alice_name
        await bob.ack(message)
        calls = await _relay_calls_after(mesh, before, 1)
        assert [c["method"] for c in calls] == ["/xchat.v1.Relay/SendSealed"], calls
        text = json.dumps(calls)
        assert alice_name not in text and alice.device_id not in text, "relay logged the sender"

        # Without the opt-in (carol), the same first message is refused sealed and goes authenticated.
        alice._sender._tokens = alice._tokens  # type: ignore[attr-defined]
        before = len(_relay_calls(mesh))
        await alice.send(carol_name, "authenticated")
        methods = [c["method"] for c in await _relay_calls_after(mesh, before, 2)]
        assert methods == ["/xchat.v1.Relay/SendSealed", "/xchat.v1.Relay/Send"], methods
        carol_inbox = carol.messages()
        got = await _next(carol_inbox)
        assert got.text == "authenticated"
        await carol.ack(got)
        assert alice._book.delivery.key_for(carol.device_id) is None, "the refusal is remembered"
        before = len(_relay_calls(mesh))
        await alice.send(carol_name, "no second try")
        methods = [c["method"] for c in await _relay_calls_after(mesh, before, 1)]
        assert methods == ["/xchat.v1.Relay/Send"], methods

        # bob turns it off: a sealed send without his key is refused again (device cache: 2 s).
        await bob.accept_sealed_from_anyone(False)
        deadline = asyncio.get_running_loop().time() + 10
        while (await _sealed_flood(mesh, bob.device_id, 1)) != ["UNAUTHENTICATED"]:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)
        await bob_inbox.aclose()
        await carol_inbox.aclose()


async def test_without_the_opt_in_a_sealed_send_without_the_key_is_unauthenticated(
    open_mesh: LocalMesh, tmp_path: Path
) -> None:
    async with await Client.open(tmp_path / "dave.db", open_mesh.endpoints("a")) as dave:
        await dave.register(_name("dave"))
        nobody = secrets.token_hex(16)
        assert await _sealed_flood(open_mesh, dave.device_id, 2) == ["UNAUTHENTICATED"] * 2
        assert await _sealed_flood(open_mesh, dave.device_id, 1, secrets.token_bytes(16)) == ["UNAUTHENTICATED"]
        assert await _sealed_flood(open_mesh, nobody, 1) == ["UNAUTHENTICATED"]


async def test_a_stranger_flooding_an_opted_in_device_is_limited_and_its_contacts_are_not(
    open_mesh: LocalMesh, tmp_path: Path
) -> None:
    mesh = open_mesh
    async with await Client.open(tmp_path / "bob.db", mesh.endpoints("b")) as bob, await Client.open(
        tmp_path / "erin.db", mesh.endpoints("a")
    ) as erin, await Client.open(tmp_path / "frank.db", mesh.endpoints("c")) as frank:
        bob_name, erin_name, frank_name = _name("bob"), _name("erin"), _name("frank")
        for client, name in ((bob, bob_name), (erin, erin_name), (frank, frank_name)):
            await client.register(name)
        await bob.accept_sealed_from_anyone()
        # erin is a contact: bob wrote to her, so she holds his delivery key.
        await bob.send(erin_name, "hi erin")
        erin_inbox = erin.messages()
        await erin.ack(await _next(erin_inbox))
        assert erin._book.delivery.key_for(bob.device_id)

        flood = await _sealed_flood(mesh, bob.device_id, 40)
        assert flood[:STRANGER_BURST] == ["OK"] * STRANGER_BURST, flood
        assert flood[-20:] == ["RESOURCE_EXHAUSTED"] * 20, flood
        assert flood.count("OK") <= STRANGER_BURST + 1

        # The contact (sealed, with the key) and a sender on the authenticated path get through.
        erin._sender._tokens = _NoToken()  # type: ignore[assignment]
        await erin.send(bob_name, "from a contact, sealed")
        frank._book.delivery.forget(bob.device_id)  # frank sends authenticated
        await frank.send(bob_name, "from frank, authenticated")
        bob_inbox = bob.messages()
        texts = set()
        while not {"from a contact, sealed", "from frank, authenticated"} <= texts:
            message = await _next(bob_inbox)
            texts.add(message.text)
            await bob.ack(message)
        await bob_inbox.aclose()
        await erin_inbox.aclose()


async def test_one_stranger_address_cannot_spread_a_flood_over_many_opted_in_devices(
    open_mesh: LocalMesh, tmp_path: Path
) -> None:
    async with await Client.open(tmp_path / "g.db", open_mesh.endpoints("a")) as gina, await Client.open(
        tmp_path / "h.db", open_mesh.endpoints("b")
    ) as hugo:
        for client, name in ((gina, _name("gina")), (hugo, _name("hugo"))):
            await client.register(name)
            await client.accept_sealed_from_anyone()
        spammer, other = "198.51.100.7", "203.0.113.9"
        first = await _sealed_flood(open_mesh, gina.device_id, 10, via=spammer)
        assert first.count("OK") == STRANGER_BURST and first[-1] == "RESOURCE_EXHAUSTED", first
        # The same address to another opted-in device: its own budget is spent, not hugo's.
        assert await _sealed_flood(open_mesh, hugo.device_id, 1, via=spammer) == ["RESOURCE_EXHAUSTED"]
        assert await _sealed_flood(open_mesh, hugo.device_id, 1, via=other) == ["OK"]
        # And gina's stranger budget is spent for everybody (per recipient).
        assert await _sealed_flood(open_mesh, gina.device_id, 1, via=other) == ["RESOURCE_EXHAUSTED"]

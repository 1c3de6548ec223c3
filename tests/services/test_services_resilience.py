"""Quota, restarts, health and shutdown, each on a private mesh."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from xchat.client import Client
from xchat.client._reordering import DEFAULT_REORDER_WINDOW_S
from xchat.mesh.local import LocalMesh, grpc_serving
from xchat.mesh.processes import wait_until
from xchat.v1 import mailbox_pb2


async def test_full_mailbox_refuses_with_resource_exhausted_and_keeps_what_it_holds(
    fresh_mesh_factory, tmp_path: Path
) -> None:
    mesh: LocalMesh = fresh_mesh_factory(mailbox_quota=5)
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register("alice")
        await bob.register("bob")
        for i in range(5):
            await alice.send("bob", f"m{i}")
        from xchat.client import RequestRejected

        with pytest.raises(RequestRejected) as err:
            await alice.send("bob", "one too many")
        assert err.value.code == "RESOURCE_EXHAUSTED" and "full" in err.value.message
        inbox = bob.messages()
        texts = []
        for _ in range(5):
            message = await asyncio.wait_for(anext(inbox), 10)
            texts.append(message.text)
            await bob.ack(message)
        assert texts == [f"m{i}" for i in range(5)]
        await asyncio.sleep(0.5)
        await alice.send("bob", "room again")  # acks freed the quota
        # "one too many" advanced alice's ratchet and was never stored: bob's order buffer
        # waits for it up to its window (ADR 0018) before "room again" goes to the app.
        assert (await asyncio.wait_for(anext(inbox), DEFAULT_REORDER_WINDOW_S + 10)).text == "room again"
        await inbox.aclose()


async def test_kill_all_service_processes_mid_conversation_loses_nothing_acked(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory()
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register("alice")
        await bob.register("bob")
        acked = []
        for i in range(10):
            await alice.send("bob", f"before-{i}")
            acked.append(f"before-{i}")
        mesh.kill_services()  # SIGKILL, NATS keeps running
        mesh.start_services()
        for i in range(10):
            await alice.send("bob", f"after-{i}")
            acked.append(f"after-{i}")
        inbox = bob.messages()
        got = []
        while len(got) < len(acked):
            message = await asyncio.wait_for(anext(inbox), 15)
            got.append(message.text)
            await bob.ack(message)
        assert got == acked
        await bob.send("alice", "the conversation continues")
        alice_inbox = alice.messages()
        assert (await asyncio.wait_for(anext(alice_inbox), 10)).text == "the conversation continues"
        await inbox.aclose()
        await alice_inbox.aclose()


async def test_health_follows_jetstream_reachability(fresh_mesh_factory) -> None:
    mesh: LocalMesh = fresh_mesh_factory(regions=("solo",), replicas=1)
    region = mesh.regions["solo"]
    assert grpc_serving(region.endpoint)
    for proc in region.nats:
        proc.kill()
    await asyncio.to_thread(
        wait_until, lambda: _status(region.endpoint) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=15, what="NOT_SERVING"
    )
    for proc in region.nats:
        proc.start()
    await asyncio.to_thread(wait_until, lambda: grpc_serving(region.endpoint), timeout=30, what="SERVING again")


def _status(endpoint: str) -> int:
    with grpc.insecure_channel(endpoint) as channel:
        try:
            return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status)
        except grpc.RpcError:
            return -1


async def test_reflection_lists_the_services_and_deadlines_are_honoured(mesh: LocalMesh) -> None:
    async with grpc.aio.insecure_channel(mesh.regions["a"].endpoint) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = set()
        async for reply in stub.ServerReflectionInfo(ask()):
            names |= {s.name for s in reply.list_services_response.service}
        assert {"xchat.v1.Auth", "xchat.v1.Keys", "xchat.v1.Relay", "xchat.v1.Mailbox", "grpc.health.v1.Health"} <= names



async def test_deadlines_are_honoured(connect) -> None:
    bob = await connect("b")

    async def opener():
        yield mailbox_pb2.SyncRequest()

    started = asyncio.get_running_loop().time()
    call = bob.mailbox.Sync(opener(), metadata=bob.md, timeout=1.0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert asyncio.get_running_loop().time() - started < 3.0


async def test_graceful_shutdown_finishes_in_flight_sends(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory()
    async with await Client.open(tmp_path / "a.db", [mesh.regions["a"].endpoint]) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register("alice")
        await bob.register("bob")
        services = mesh.regions["a"].services
        assert services is not None
        # A first send sets everything up (bob's verified device list, its key transparency
        # proof, the session), so the SIGTERM below lands among envelopes in flight, not before.
        (warm_up,) = await alice.send("bob", "warm-up")
        sending = asyncio.create_task(alice.send_many([("bob", f"s{i}") for i in range(300)]))
        await asyncio.sleep(0.3)
        services.signal(signal.SIGTERM)
        outcomes = await sending
        acked = {o.message_id for o in outcomes if hasattr(o, "receipt")} | {warm_up.message_id}
        assert await asyncio.to_thread(services.wait, 30) == 0, "clean exit after SIGTERM"
        inbox = bob.messages()
        received = set()
        while len(received) < len(acked):
            message = await asyncio.wait_for(anext(inbox), 15)
            received.add(message.message_id)
            await bob.ack(message)
        assert acked <= received, "every acknowledged send was delivered"
        await inbox.aclose()

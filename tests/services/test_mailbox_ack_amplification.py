"""A receiver that acknowledges one envelope per frame cannot make the store do one
replicated operation per frame (issue 18).

Each purge is a Raft operation fsynced on every region's server (≈ 1.5 ms of
nats-server CPU, as much as storing the message). A Sync call now folds the acks
of ``PURGE_LINGER_S`` into one purge, so a client sending ack frames as fast as it
can costs the store a handful of operations, and what it acknowledged is still
gone within the bound. Counted from outside, as an operator would: JetStream API
requests (``/jsz`` ``api.total``) on all servers. Before the change every frame
was one purge (the count grew by at least the number of frames).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.request

import nats

from xchat.mailbox.acks import PURGE_LINGER_S
from xchat.mesh.local import LocalMesh
from xchat.v1 import mailbox_pb2, relay_pb2

FRAMES = 60


def _api_requests(mesh: LocalMesh) -> int:
    total = 0
    for node in mesh.all_nodes:
        with urllib.request.urlopen(f"http://{node.host}:{node.http_port}/jsz", timeout=5) as reply:
            total += int(json.load(reply)["api"]["total"])
    return total


async def test_one_ack_per_frame_costs_a_few_purges_and_still_empties_the_mailbox(mesh: LocalMesh, connect) -> None:
    alice, bob = await connect("a"), await connect("c")
    for _ in range(FRAMES):
        await alice.relay.Send(
            relay_pb2.SendRequest(recipient_device_id=bob.device_id, message_id=secrets.token_bytes(16), ciphertext=b"c"),
            metadata=alice.md,
        )
    frames: asyncio.Queue[list[int] | None] = asyncio.Queue()

    async def requests():
        yield mailbox_pb2.SyncRequest()
        while (frame := await frames.get()) is not None:
            yield mailbox_pb2.SyncRequest(ack_sequences=frame)

    call = bob.mailbox.Sync(requests(), metadata=bob.md)
    try:
        got: list[int] = []
        while len(got) < FRAMES:
            response = await asyncio.wait_for(call.read(), 10)
            got.extend(e.sequence for e in response.envelopes)
        before = await asyncio.to_thread(_api_requests, mesh)
        started = asyncio.get_running_loop().time()
        for sequence in got:  # one ack per frame, as fast as the stream takes them
            frames.put_nowait([sequence])
            await asyncio.sleep(0)

        polls = 0

        async def empty() -> bool:
            nonlocal polls
            polls += 1  # each poll is one JetStream API request (STREAM.INFO) of ours
            return await bob_stream_messages(mesh, bob.device_id) == 0

        deadline = started + 10
        while not await empty():
            assert asyncio.get_running_loop().time() < deadline, "acknowledged envelopes still stored after 10 s"
            await asyncio.sleep(0.05)
        emptied_in = asyncio.get_running_loop().time() - started
        requests_made = await asyncio.to_thread(_api_requests, mesh) - before - polls
    finally:
        frames.put_nowait(None)
        call.cancel()
    # A few purges (one per linger) plus the services' own periodic requests, never one per frame.
    print(f"{requests_made} JetStream API requests for {FRAMES} ack frames; emptied in {emptied_in:.2f} s")
    assert requests_made < FRAMES // 2, f"{requests_made} JetStream API requests for {FRAMES} ack frames"
    assert emptied_in < 10 * PURGE_LINGER_S + 5


async def bob_stream_messages(mesh: LocalMesh, device: str) -> int:
    """Messages stored on ``device``'s subject (an admin connection, not through the service)."""
    nc = await nats.connect(mesh.nats_urls("a"))
    try:
        info = await nc.jetstream().stream_info("XCHAT_MAILBOX", subjects_filter=f"xchat.mbx.{device}")
        return int((info.state.subjects or {}).get(f"xchat.mbx.{device}", 0))
    finally:
        await nc.close()

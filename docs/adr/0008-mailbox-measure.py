"""Measurements behind ADR 0008 (not a test: numbers, not assertions).

    .venv/bin/python docs/adr/0008-mailbox-measure.py idle --streams 1000 --seconds 30
    .venv/bin/python docs/adr/0008-mailbox-measure.py acks --messages 1000 --rounds 3

``idle``: a fresh three-region mesh, N registered devices, N open Sync streams
on region a and no traffic; reports region a's service process CPU (% of one
core) and RSS per stream, and the three nats-servers' CPU and RSS per stream.
``acks``: one device, M (≤ 1,000) envelopes queued, one Sync that receives them
all, then acknowledges them, one ack frame per response (as the SDK does);
reports acks/s from the first ack frame until the device's subject is empty,
for each of R rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc.aio
import nacl.signing
import nats

from xchat.mesh.local import LocalMesh
from xchat.statements import login_statement, register_statement
from xchat.v1 import auth_pb2, auth_pb2_grpc, mailbox_pb2, mailbox_pb2_grpc, relay_pb2, relay_pb2_grpc

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def register(channel: grpc.aio.Channel) -> tuple[str, str]:
    auth = auth_pb2_grpc.AuthStub(channel)
    key = nacl.signing.SigningKey.generate()
    account = f"m{secrets.token_hex(6)}"
    ik = bytes(key.verify_key)
    reply = await auth.Register(
        auth_pb2.RegisterRequest(account=account, identity_key=ik, signature=key.sign(register_statement(account, ik)).signature)
    )
    challenge = await auth.Challenge(auth_pb2.ChallengeRequest(device_id=reply.device_id))
    tokens = await auth.Login(
        auth_pb2.LoginRequest(
            device_id=reply.device_id,
            nonce=challenge.nonce,
            signature=key.sign(login_statement(reply.device_id, challenge.nonce)).signature,
        )
    )
    return reply.device_id, tokens.access_token


def channel_to(mesh: LocalMesh, region: str) -> grpc.aio.Channel:
    roots = mesh.root_certificates
    if roots is None:
        return grpc.aio.insecure_channel(mesh.regions[region].endpoint)
    return grpc.aio.secure_channel(mesh.regions[region].endpoint, grpc.ssl_channel_credentials(roots))


def nats_subscriptions(mesh: LocalMesh) -> int:
    total = 0
    for region in mesh.regions.values():
        for node in region.nodes:
            with urllib.request.urlopen(f"{mesh.monitor_url(node.name)}/varz", timeout=5) as reply:
                total += int(json.load(reply)["subscriptions"])
    return total


async def idle(mesh: LocalMesh, streams: int, seconds: float) -> None:
    channels = [channel_to(mesh, "a") for _ in range(max(1, streams // 100))]
    gate = asyncio.Semaphore(32)

    async def reg(i: int) -> tuple[str, str]:
        async with gate:
            return await register(channels[i % len(channels)])

    devices = await asyncio.gather(*(reg(i) for i in range(streams)))
    service = mesh.regions["a"].services
    assert service is not None and service.pid is not None
    nats_pids = [p.pid for r in mesh.regions.values() for p in r.nats if p.pid is not None]
    await asyncio.sleep(3)
    # Baseline: the same mesh and devices, no stream open.
    b0, bn0, bt0 = cpu_s(service.pid), sum(cpu_s(p) for p in nats_pids), time.monotonic()
    await asyncio.sleep(seconds)
    b1, bn1, bt1 = cpu_s(service.pid), sum(cpu_s(p) for p in nats_pids), time.monotonic()
    print(f"no stream open:  service CPU {100 * (b1 - b0) / (bt1 - bt0):.1f}%, 3 nats-servers CPU {100 * (bn1 - bn0) / (bt1 - bt0):.1f}% of a core")
    rss0, nats_rss0 = rss_kib(service.pid), sum(rss_kib(p) for p in nats_pids)
    subs0 = nats_subscriptions(mesh)
    stop = asyncio.Event()

    async def opener() -> object:
        yield mailbox_pb2.SyncRequest()
        await stop.wait()

    calls = []
    for i, (_device, token) in enumerate(devices):
        stub = mailbox_pb2_grpc.MailboxStub(channels[i % len(channels)])
        calls.append(stub.Sync(opener(), metadata=(("authorization", f"Bearer {token}"),)))
    await asyncio.gather(*(call.read() for call in calls))  # backlog_done: every stream is open
    await asyncio.sleep(5)
    c0, n0, t0 = cpu_s(service.pid), sum(cpu_s(p) for p in nats_pids), time.monotonic()
    await asyncio.sleep(seconds)
    c1, n1, t1 = cpu_s(service.pid), sum(cpu_s(p) for p in nats_pids), time.monotonic()
    rss1, nats_rss1 = rss_kib(service.pid), sum(rss_kib(p) for p in nats_pids)
    subs1 = nats_subscriptions(mesh)
    print(f"streams={streams} window={t1 - t0:.0f}s")
    print(f"service process: CPU {100 * (c1 - c0) / (t1 - t0):.1f}% of a core, RSS {rss0} -> {rss1} KiB, {(rss1 - rss0) / streams:.1f} KiB/stream")
    print(
        f"3 nats-servers:  CPU {100 * (n1 - n0) / (t1 - t0):.1f}% of a core, RSS {nats_rss0} -> {nats_rss1} KiB, "
        f"{(nats_rss1 - nats_rss0) / streams:.1f} KiB/stream (Go returns memory lazily: noisy), "
        f"subscriptions {subs0} -> {subs1}"
    )
    stop.set()
    for call in calls:
        call.cancel()
    for channel in channels:
        await channel.close()


async def acks(mesh: LocalMesh, messages: int, rounds: int) -> None:
    channel = channel_to(mesh, "a")
    device, token = await register(channel)
    md = (("authorization", f"Bearer {token}"),)
    relay = relay_pb2_grpc.RelayStub(channel)
    nc = await nats.connect(mesh.nats_urls("a"))
    js = nc.jetstream()

    async def left() -> int:
        info = await js.stream_info("XCHAT_MAILBOX", subjects_filter=f"xchat.mbx.{device}")
        return sum((info.state.subjects or {}).values())

    async def batches() -> object:
        for start in range(0, messages, 128):
            yield relay_pb2.SendBatch(
                envelopes=[
                    relay_pb2.SendRequest(recipient_device_id=device, message_id=secrets.token_bytes(16), ciphertext=b"x" * 256)
                    for _ in range(min(128, messages - start))
                ]
            )

    for _ in range(rounds):
        async for _ in relay.SendStream(batches(), metadata=md):
            pass
        frames: asyncio.Queue[list[int] | None] = asyncio.Queue()

        async def requests() -> object:
            yield mailbox_pb2.SyncRequest()
            while (frame := await frames.get()) is not None:
                yield mailbox_pb2.SyncRequest(ack_sequences=frame)

        call = mailbox_pb2_grpc.MailboxStub(channel).Sync(requests(), metadata=md)
        received: list[list[int]] = []
        async for response in call:
            if response.envelopes:
                received.append([e.sequence for e in response.envelopes])
            if sum(map(len, received)) >= messages:
                break
        # The acks alone: one frame per response, as the SDK sends them.
        start = time.monotonic()
        for frame in received:
            frames.put_nowait(frame)
        while (remaining := await left()) > 0:
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - start
        print(f"{messages} acks in {len(received)} frames: {elapsed:.3f}s = {messages / elapsed:.0f} acks/s")
        frames.put_nowait(None)
        call.cancel()
    await nc.close()
    await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("idle", "acks"))
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    # At most 1,000 (the unacknowledged limit of a Sync call).
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tls", action="store_true", help="TLS on every hop, as the issue measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalMesh(Path(tmp), tls=args.tls) as mesh:
        if args.what == "idle":
            asyncio.run(idle(mesh, args.streams, args.seconds))
        else:
            asyncio.run(acks(mesh, args.messages, args.rounds))


if __name__ == "__main__":
    main()

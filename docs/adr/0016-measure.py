"""ADR 0016 measurement (issue 14): delivered receipts per backlog, receipt latency. Usage: python docs/adr/0016-measure.py [N]"""
import asyncio, secrets, statistics, sys, time, tempfile
from pathlib import Path
from xchat.client import Client, MessagesDelivered
from xchat.mesh.local import LocalMesh

N_BACKLOG = int(sys.argv[1]) if len(sys.argv) > 1 else 300

async def main(mesh: LocalMesh, tmp: Path) -> None:
    alice = await Client.open(tmp / "a.db", mesh.endpoints("a"))
    await alice.register(f"alice{secrets.token_hex(3)}")
    bob = await Client.open(tmp / "b.db", mesh.endpoints("c"))
    await bob.register(f"bob{secrets.token_hex(3)}")
    events: list = []
    async def watch():
        async for e in alice.events():
            if isinstance(e, MessagesDelivered):
                events.append((time.monotonic(), e))
    async def drain(c):
        async for m in c.messages():
            await c.ack(m)
    tasks = [asyncio.create_task(watch()), asyncio.create_task(drain(alice))]
    # Backlog: bob offline (not reading) while alice sends N.
    sent = [(await alice.send(bob.account, f"m{i}"))[0].message_id for i in range(N_BACKLOG)]
    got = 0
    t0 = time.monotonic()
    async for m in bob.messages():
        await bob.ack(m)
        got += 1
        if got == N_BACKLOG:
            break
    while len({i for _, e in events for i in e.message_ids}) < N_BACKLOG:
        await asyncio.sleep(0.05)
    print(f"backlog {N_BACKLOG}: {len(events)} delivered receipts covered all ids, {time.monotonic()-t0:.2f}s from reading to last receipt")
    # Live latency: send -> MessagesDelivered, one at a time.
    reader = asyncio.create_task(drain(bob))
    lat = []
    for i in range(20):
        before = len(events)
        t = time.monotonic()
        mid = (await alice.send(bob.account, f"live{i}"))[0].message_id
        while not any(mid in e.message_ids for _, e in events[before:]):
            await asyncio.sleep(0.005)
        lat.append((time.monotonic() - t) * 1000)
    print(f"live: send -> MessagesDelivered p50 {statistics.median(lat):.0f} ms, max {max(lat):.0f} ms (RECEIPT_DELAY_S 0.2 s included)")
    for t in tasks + [reader]:
        t.cancel()
    await asyncio.gather(*tasks, reader, return_exceptions=True)
    await alice.close(); await bob.close()

def run() -> None:
    with tempfile.TemporaryDirectory() as d:
        with LocalMesh(Path(d) / "mesh") as mesh:
            asyncio.run(main(mesh, Path(d)))

run()

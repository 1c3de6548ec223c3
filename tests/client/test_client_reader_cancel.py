"""An app that cancels the task reading ``messages()`` gets it back: the SDK never
absorbs a task cancellation as a reason to reconnect (a teardown hung for ever when
a cancellation reached the Sync loop as a gRPC CANCELLED status or a lookup failure).
"""

from __future__ import annotations

import asyncio
import random
import secrets
from pathlib import Path

from xchat.client import Client
from xchat.mesh.local import LocalMesh

ROUNDS = 40
CANCEL_BOUND_S = 5.0


async def test_cancelling_the_reader_task_always_ends_it(mesh: LocalMesh, tmp_path: Path) -> None:
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("c")
    ) as bob:
        await alice.register(f"a{secrets.token_hex(4)}")
        await bob.register(f"b{secrets.token_hex(4)}")
        stop = asyncio.Event()

        async def traffic() -> None:
            n = 0
            while not stop.is_set():
                await alice.send(bob.account, f"m{n}")
                n += 1

        sender = asyncio.create_task(traffic())
        rng = random.Random(7)
        try:
            for round_ in range(ROUNDS):
                async def read() -> None:
                    async for message in bob.messages():
                        await bob.ack(message)

                reader = asyncio.create_task(read())
                # Cancel at a different point each round: opening, backlog, mid-batch, idle.
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                reader.cancel()
                done, _ = await asyncio.wait({reader}, timeout=CANCEL_BOUND_S)
                assert done, f"round {round_}: the reader task ignored its cancellation for {CANCEL_BOUND_S}s"
                assert reader.cancelled() or reader.exception() is None, reader.exception()
        finally:
            stop.set()
            await asyncio.gather(sender, return_exceptions=True)


async def test_a_cancellation_that_meets_the_first_answer_is_not_swallowed() -> None:
    """Python 3.11's ``asyncio.wait_for`` returns the result and drops the caller's
    cancellation when both land in one loop step; the Sync loop then ran on for ever.
    Driven deterministically here: the first answer and the cancel arrive together."""
    from xchat.client._sync_responses import opened_within

    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    class OneAnswer:
        def __aiter__(self) -> OneAnswer:
            return self

        async def initial_metadata(self) -> tuple[()]:
            return ()

        async def __anext__(self) -> str:
            return await answer

    async def consume() -> None:
        async for _ in opened_within(OneAnswer(), 5.0, 5.0):  # type: ignore[arg-type]
            await asyncio.sleep(3600)  # a cancellation that slipped through would park here

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    answer.set_result("first")
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    if not done:  # the bug: clean up the parked task before failing
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert done and task.cancelled(), "the cancellation was swallowed"

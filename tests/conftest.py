"""Shared fixtures: the real multi-region mesh (nats-server + gRPC services).

Start-up lives in ``xchat.mesh.local.LocalMesh`` (also used by ``xchat up``
and the chaos drills); these fixtures only choose its scope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from xchat.mesh.local import LocalMesh


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """Three regions (a, b, c), one NATS node and one service process each, shared by a session."""
    with LocalMesh(tmp_path_factory.mktemp("mesh")) as running:
        yield running


@pytest.fixture
def fresh_mesh_factory(tmp_path: Path) -> Iterator[object]:
    """Builds a private mesh for tests that break or reconfigure it; always reaped."""
    started: list[LocalMesh] = []

    def make(**kwargs: object) -> LocalMesh:
        mesh = LocalMesh(tmp_path / f"mesh{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(mesh)
        mesh.start()
        return mesh

    yield make
    for mesh in started:
        mesh.stop()


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> object:
    """Fails a test that leaves asyncio tasks running behind it."""
    yield
    current = asyncio.current_task()
    leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if leftover:
        for task in leftover:
            task.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)
        names = sorted({getattr(t.get_coro(), "__qualname__", None) or repr(t) for t in leftover})
        # grpc.aio keeps a few of its own internal tasks around between calls.
        ours = [n for n in names if "xchat" in n or "test" in n]
        assert not ours, f"test leaked tasks: {ours}"

"""The demo (``xchat up --demo``) runs to completion on the real three-region mesh and says what it shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from xchat.demo import run_demo
from xchat.mesh.local import LocalMesh


async def test_the_demo_runs_a_group_of_three_across_three_regions(
    mesh: LocalMesh, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_demo(
        mesh.endpoints("a"), mesh.endpoints("c"), tmp_path, carol_endpoints=mesh.endpoints("b"),
        root_certificates=mesh.root_certificates,
    )
    out = capsys.readouterr().out
    assert "both sides compute the same number: True" in out
    assert out.count("read 'Hello both!") == 2 and out.count("read 'Hi from the third region!'") == 2
    assert out.count("(SHA-256 matches: True)") == 2
    assert "delivered receipt" in out and "read receipt" in out
    assert out.rstrip().endswith("demo: done")

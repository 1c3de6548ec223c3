"""The README's SDK snippet runs as pasted: every ```python block after a ``readme-test`` marker is
executed unchanged, in a fresh directory, against a live local mesh with TLS (as ``xchat up`` runs it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from xchat.mesh.local import LocalMesh

README = Path(__file__).resolve().parents[1] / "README.md"
MARKED = re.compile(r"<!-- readme-test[^>]*-->\s*```python\n(.*?)```", re.S)
RUN_TIMEOUT_S = 90  # a loaded 2-core machine: key generation, register, send, receive


def marked_blocks(text: str) -> list[str]:
    return MARKED.findall(text)


def test_the_marker_finds_blocks() -> None:
    text = "x\n<!-- readme-test: why -->\n```python\nprint(1)\n```\n```python\nnot me\n```\n"
    assert marked_blocks(text) == ["print(1)\n"]
    assert marked_blocks(README.read_text()), "README.md has no block marked <!-- readme-test -->"


@pytest.mark.slow
def test_readme_sdk_snippet_runs_as_pasted(fresh_mesh_factory: Callable[..., LocalMesh], tmp_path: Path) -> None:
    mesh = fresh_mesh_factory(tls=True)
    assert mesh.tls is not None
    env = {**os.environ, "XCHAT_ENDPOINTS": ",".join(mesh.endpoints()), "XCHAT_CA": str(mesh.tls.ca)}
    for i, block in enumerate(marked_blocks(README.read_text())):
        workdir = tmp_path / f"block{i}"
        workdir.mkdir()
        (workdir / "snippet.py").write_text(block)
        res = subprocess.run([sys.executable, "snippet.py"], cwd=workdir, env=env, capture_output=True, text=True,
                             timeout=RUN_TIMEOUT_S)
        assert res.returncode == 0, f"README block {i} failed:\n{res.stdout}\n{res.stderr}"
        assert res.stderr == "", f"README block {i} wrote to stderr:\n{res.stderr}"
        if "alice.send" in block:
            assert "alice hello" in res.stdout, res.stdout

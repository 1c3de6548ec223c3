"""The committed generated code in xchat.v1 matches proto/ (regenerated with the pinned grpcio-tools)."""

from __future__ import annotations

from pathlib import Path

import xchat.v1
from xchat._protogen import generate


def test_generated_code_is_current(tmp_path: Path) -> None:
    fresh = {p.name: p.read_bytes() for p in generate(tmp_path)}
    committed_dir = Path(xchat.v1.__file__).parent
    committed = {p.name: p.read_bytes() for p in committed_dir.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"}}
    stale = sorted(name for name in fresh if committed.get(name) != fresh[name])
    extra = sorted(set(committed) - set(fresh))
    assert not stale and not extra, f"run `python -m xchat._protogen`: stale {stale}, unexpected {extra}"

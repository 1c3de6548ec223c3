"""docs/sdk.md is the SDK's public surface as the code has it (regenerate, never edit)."""

from __future__ import annotations

from pathlib import Path

from xchat.client import _reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"


def test_the_sdk_reference_is_current() -> None:
    assert DOC.read_text() == _reference.render(), (
        "docs/sdk.md is stale: run `.venv/bin/python -m xchat.client._reference > docs/sdk.md`"
    )


def test_every_public_call_is_documented() -> None:
    assert "(undocumented)" not in _reference.render(), "a public SDK name has no docstring"

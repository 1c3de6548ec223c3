"""docs/sdk.md, generated from the SDK's public surface and its docstrings.

``python -m xchat.client._reference > docs/sdk.md``; tests/client/test_client_reference.py
fails when the committed file differs, so the reference cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Iterator

import xchat.client as sdk

HEADER = """# SDK reference

Generated from the code by `python -m xchat.client._reference > docs/sdk.md` (a test
fails when it is stale). The README's SDK section shows a whole program; docs/crypto.md
says what the cryptography guarantees.
"""


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(undocumented)")


def _members(cls: type) -> Iterator[tuple[str, object]]:
    """``cls``'s public members, then those of the classes it inherits (``Client``'s feature
    methods, ``_client_*``) in method resolution order; each name once, as Python resolves it."""
    seen: set[str] = set()
    for owner in cls.__mro__[:-1]:  # not ``object``
        for name, member in owner.__dict__.items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            yield name, member


def _signature(name: str, member: object) -> str:
    target = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
    if isinstance(target, property):
        return f"`{name}` (property)"
    try:
        text = str(inspect.signature(target))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return f"`{name}`"
    text = re.sub(r"(: |-> )'([^']*)'", r"\1\2", text)  # annotations are strings here (PEP 563)
    prefix = "async " if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target) else ""
    return f"`{prefix}{name}{text.replace('(self, ', '(').replace('(self)', '()').replace('(cls, ', '(')}`"


def _client() -> list[str]:
    lines = ["## `Client`", "", _doc(sdk.Client), ""]
    for name, member in _members(sdk.Client):
        target = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
        if not (callable(target) or isinstance(target, property)):
            continue
        lines += [f"### {_signature(name, member)}", "", _doc(target), ""]
    return lines


def _types() -> list[str]:
    lines = ["## Values, events and errors", ""]
    for name in sorted(n for n in sdk.__all__ if n != "Client"):
        obj = getattr(sdk, name)
        lines += [f"### `{name}`", "", _doc(obj), ""]
        if dataclasses.is_dataclass(obj):
            fields = ", ".join(f"`{f.name}`" for f in dataclasses.fields(obj))
            lines += [f"Fields: {fields}.", ""]
    return lines


def render() -> str:
    return "\n".join([HEADER, *_client(), *_types()]).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")

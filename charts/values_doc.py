"""charts/xchat/README.md, generated from charts/xchat/values.yaml (helm-docs style comments).

A ``# --`` comment above a key (continued by the ``#`` lines that follow it), or a
comment at the end of the key's line, describes that key. In a resource block
(a map with ``merge``), ``enabled``, ``merge`` and ``patch`` are described by the
convention in the values.yaml header. Lists and one-line ``{...}`` maps are single
values; a described map gets a row of its own above its keys. Defaults come from
the parsed YAML itself.
tests/chart/test_chart_readme.py fails when the README is stale or a value has no
description.

Regenerate with::

    .venv/bin/python charts/values_doc.py > charts/xchat/README.md
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

CHART = Path(__file__).resolve().parent / "xchat"
REGENERATE = ".venv/bin/python charts/values_doc.py > charts/xchat/README.md"
CONVENTIONS = {
    "enabled": "create the object or not",
    "merge": "a map deep-merged into the rendered object (maps merge, lists replace)",
    "patch": "a JSON patch (RFC 6902: add / replace / remove) applied after merge",
}
_KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")


MAP = object()  # the default of a map's own row: its keys follow


@dataclass(frozen=True, slots=True)
class Value:
    path: str
    default: Any
    description: str


def _split_comment(rest: str) -> tuple[str, str]:
    """The value and the trailing comment of what follows ``key:`` (``#`` inside quotes is kept)."""
    quote = ""
    for i, ch in enumerate(rest):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1:].strip()
    return rest.strip(), ""


def _lookup(tree: Any, path: list[str]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def parse(text: str) -> list[Value]:
    tree = yaml.safe_load(text)
    lines = text.splitlines()
    values: list[Value] = []
    stack: list[tuple[int, str, str]] = []  # (indent, key, description) of the open maps
    pending: list[str] | None = None
    for n, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            pending = None
            continue
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        match = _KEY.match(line)
        if match is None:  # a list item of the value above
            continue
        indent, key = len(match["indent"]), match["key"]
        raw, inline = _split_comment(match["rest"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        own = " ".join(pending) if pending else inline
        pending = None
        path = [k for _, k, _ in stack] + [key]
        following = next((ln for ln in lines[n + 1:] if ln.strip() and not ln.strip().startswith("#")), "")
        is_list = following.strip().startswith("- ")
        if raw or is_list:
            parent = _lookup(tree, path[:-1])
            convention = CONVENTIONS.get(key, "") if "merge" in parent else ""
            values.append(Value(".".join(path), _lookup(tree, path), own or convention))
        else:
            stack.append((indent, key, own))
            if own:
                values.append(Value(".".join(path), MAP, own))
    return values


def render(values: list[Value], chart: dict[str, Any]) -> str:
    lines = [
        f"# {chart['name']} chart",
        "",
        "<!-- Generated from values.yaml by charts/values_doc.py; do not edit. Regenerate:",
        f"     {REGENERATE} -->",
        "",
        " ".join(str(chart.get("description", "")).split()),
        "",
        f"Chart version {chart['version']}, app version {chart['appVersion']}, Kubernetes {chart.get('kubeVersion', '')}.",
        "Install, upgrade, validation and the merge/patch convention: [docs/chart.md](../../docs/chart.md).",
        "",
        "## Values",
        "",
        "| Key | Default | Description |",
        "|---|---|---|",
    ]
    for v in values:
        default = "" if v.default is MAP else "`" + json.dumps(v.default, separators=(", ", ": ")) + "`"
        cells = (f"`{v.path}`", default, v.description)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    values = parse((CHART / "values.yaml").read_text())
    sys.stdout.write(render(values, yaml.safe_load((CHART / "Chart.yaml").read_text())))


if __name__ == "__main__":
    main()

"""Renders the configuration reference (docs/configuration.md) from tables of :class:`Variable`.

The table that :func:`xchat.core.settings.from_env` reads is the one documented,
so a default or a variable cannot change without the reference changing;
``tests/test_docs_configuration.py`` fails when the committed file is stale.
The full file adds the operator's table, which only the operator package may
import: ``python -m xchat_operator.settings_doc`` composes and prints it.
"""

from __future__ import annotations

from collections.abc import Sequence

from xchat.core.settings import VARIABLES, Variable

_UNITS = (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))
_DURATIONS = (("d", 86400), ("h", 3600), ("min", 60))


def _friendly(name: str, value: int | float) -> str:
    """A reading aid for large defaults: bytes in binary units, seconds in days/hours/minutes."""
    table = _UNITS if name.endswith("_BYTES") else _DURATIONS if name.endswith("_S") else ()
    for unit, size in table:
        if value >= size and value % size == 0:
            return f" ({int(value // size)} {unit})"
    return ""


def render_default(var: Variable) -> str:
    value = var.default
    if value is None:
        return "unset"
    if value == "":
        return "— (required)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(str(v) for v in value)}`" if value else "none"
    if isinstance(value, (int, float)):
        return f"`{value}`{_friendly(var.name, value)}"
    return f"`{value}`"


def render(variables: Sequence[Variable] = VARIABLES, *, regenerate: str) -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from the settings tables (xchat.core.settings.VARIABLES,",
        f"     xchat_operator.settings.VARIABLES); do not edit. Regenerate: {regenerate} -->",
        "",
        "`xchat serve` and `python -m xchat.mesh.bootstrap` read these `XCHAT_*` variables",
        "once at start; a command-line flag, where there is one, wins. A malformed value stops",
        "the process with a message naming the variable. Storage settings shape the stream",
        "and buckets, which only bootstrap creates or updates (running services never reshape",
        "storage). On Kubernetes the operator sets the service variables from the XChatMesh",
        "spec ([operator.md](operator.md)); its own variables are the last table.",
    ]
    groups: dict[str, list[Variable]] = {}
    for var in variables:
        groups.setdefault(var.group, []).append(var)
    for group, members in groups.items():
        lines += ["", f"## {group}", "", "| Variable | Flag | Default | Meaning |", "|---|---|---|---|"]
        for var in members:
            flag = f"`{var.flag}`" if var.flag else ""
            meaning = var.meaning.replace("|", "\\|")
            lines.append(f"| `{var.name}` | {flag} | {render_default(var)} | {meaning} |")
    return "\n".join(lines) + "\n"


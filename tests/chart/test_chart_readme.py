"""charts/xchat/README.md is generated from values.yaml (charts/values_doc.py): current, every value described."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "xchat"


@functools.cache
def values_doc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("values_doc", REPO / "charts" / "values_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["values_doc"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_chart_readme_is_current() -> None:
    doc = values_doc()
    expected = doc.render(doc.parse((CHART / "values.yaml").read_text()), yaml.safe_load((CHART / "Chart.yaml").read_text()))
    assert (CHART / "README.md").read_text() == expected, f"charts/xchat/README.md is stale; regenerate: {doc.REGENERATE}"


def test_every_value_is_listed_and_described() -> None:
    doc = values_doc()
    values = doc.parse((CHART / "values.yaml").read_text())
    assert [v.path for v in values if not v.description.strip()] == [], "add a `# --` comment in values.yaml"

    def leaves(tree: object, path: str) -> set[str]:
        if isinstance(tree, dict) and tree:
            return {p for k, sub in tree.items() for p in leaves(sub, f"{path}.{k}" if path else k)}
        return {path}
    listed = {v.path for v in values}
    # A one-line map (e.g. services.auth) is one row; its keys are under it.
    assert {p for p in leaves(yaml.safe_load((CHART / "values.yaml").read_text()), "")
            if not any(p == q or p.startswith(q + ".") for q in listed)} == set()


def test_parser_reads_comments_and_conventions() -> None:
    doc = values_doc()
    text = ("# -- a block\nblock:\n  # -- how many,\n  # continued\n  count: 2\n  name: x  # inline\n"
            "  enabled: true\n  merge: {}\n  list:\n    - a\n")
    rows = {v.path: (v.default, v.description) for v in doc.parse(text)}
    assert rows["block.count"] == (2, "how many, continued")
    assert rows["block.name"] == ("x", "inline")
    assert rows["block.enabled"][1] == doc.CONVENTIONS["enabled"]
    assert rows["block.list"] == (["a"], "")
    assert rows["block"][1] == "a block"

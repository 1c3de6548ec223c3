"""docs/observability.md keeps up with the code: every metric is documented, and every XCHAT_* setting
in docs/configuration.md, to which observability.md points (generated: tests/test_docs_configuration.py)."""

from __future__ import annotations

import re
from pathlib import Path

from xchat.core.metrics import METRIC_NAMES
from xchat_operator.metrics import METRIC_NAMES as OPERATOR_METRICS

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "observability.md").read_text()


def test_every_metric_is_documented() -> None:
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in METRIC_NAMES | OPERATOR_METRICS}
    assert {f for f in families if f"`{f}`" not in DOC} == set()


def test_every_setting_of_serve_is_documented() -> None:
    sources = [REPO / "services" / "xchat" / "core" / "settings.py", REPO / "services" / "xchat" / "cli.py"]
    names = {n for path in sources for n in re.findall(r"XCHAT_[A-Z_]*[A-Z]", path.read_text())}
    names -= {"XCHAT_TLS"}  # the prefix of XCHAT_TLS_{CERT,KEY,CA}_FILE, built in a loop
    reference = (REPO / "docs" / "configuration.md").read_text()
    assert "configuration.md" in DOC
    assert {n for n in names if n not in reference} == set()

"""Bad values are refused before anything reaches a cluster, with a readable message.

Each file in charts/xchat/bad-values/ starts with `# expect: <message>`; the
message comes from values.schema.json or, for rules a JSON schema cannot
express (mirroring the CRD's CEL rules), from the chart's `fail` checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import BAD_VALUES, CHART, KUBE_VERSION, run_helm


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


def test_there_are_bad_values_files() -> None:
    assert len(BAD_VALUES) >= 8


@pytest.mark.parametrize("values", BAD_VALUES, ids=[p.stem for p in BAD_VALUES])
def test_bad_values_are_rejected_with_a_readable_message(helm: Path, values: Path) -> None:
    done = run_helm(helm, "template", "xchat", str(CHART), "--namespace", "xchat", "--kube-version", KUBE_VERSION,
                    "--values", str(values))
    assert done.returncode != 0, f"{values.name} was accepted"
    assert _expected(values) in done.stderr, done.stderr


def test_schema_rejects_set_flags_too(helm: Path) -> None:
    done = run_helm(helm, "template", "xchat", str(CHART), "--namespace", "xchat",
                    "--kube-version", KUBE_VERSION, "--set", "mesh.regions[0].natsNodes=9")
    assert done.returncode != 0
    assert "at '/mesh/regions/0/natsNodes': maximum: got 9, want 7" in done.stderr, done.stderr

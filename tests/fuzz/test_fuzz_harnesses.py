"""A short run of each atheris harness (``fuzz_parsers.py``): CI fails on any crash.

Each target runs in its own process for ``SECONDS`` (libFuzzer's
``-max_total_time``; a few thousand to a hundred thousand inputs, depending
on the target), from a fixed seed and the harness's seed corpus. A crash
(an exception outside the target's documented errors, or a broken property)
makes libFuzzer exit non-zero and write the input; the test then shows the
traceback and the path of the input to reproduce with::

    .venv/bin/python tests/fuzz/fuzz_parsers.py TARGET CORPUS_DIR path/to/crash-<sha>

Skipped when atheris is not installed (``pip install -e '.[fuzz]'``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is not installed: pip install -e '.[fuzz]' (CPython wheels for Linux x86_64)")

HARNESS = Path(__file__).with_name("fuzz_parsers.py")
SECONDS = 5
TARGETS = ["tokens", "sealed", "envelopes", "statements"]


@pytest.mark.parametrize("target", TARGETS)
def test_a_short_fuzzing_run_finds_no_crash(target: str, tmp_path: Path) -> None:
    command = [
        sys.executable, str(HARNESS), target, str(tmp_path / "corpus"),
        f"-max_total_time={SECONDS}", "-seed=1", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=SECONDS + 60, cwd=tmp_path)
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert run.returncode == 0 and not crashes, f"{target}: exit {run.returncode}, inputs {crashes}\n{run.stderr[-4000:]}"
    runs = [line for line in run.stderr.splitlines() if line.startswith("stat::number_of_executed_units")]
    assert runs and int(runs[0].split(":")[-1]) > 500, f"{target} barely ran:\n{run.stderr[-2000:]}"

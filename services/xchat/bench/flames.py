"""Flame graphs of a phase, recorded with py-spy from outside the processes (optional).

``xchat bench --flamegraphs DIR`` runs one extra, unmeasured pass of the
cross-region closed-loop phases and the 50 %-of-peak open loop with py-spy
attached to the sending app, the receiving app and the service processes of
the sender's and the receiver's regions, and one more idle window of the
online devices with py-spy on every region's service process; each process
gets an SVG in DIR named ``<phase>-<role>.svg``. The recorders are children
of this process and always reaped.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

SAMPLE_RATE = 200
STOP_TIMEOUT_S = 30.0


def py_spy() -> Path:
    candidate = Path(sysconfig.get_path("scripts")) / "py-spy"
    if candidate.exists():
        return candidate
    found = shutil.which("py-spy")
    if found is None:
        raise RuntimeError("--flamegraphs needs py-spy (pip install py-spy)")
    return Path(found)


class Recording:
    """``with Recording(out_dir, "closed_64", {"sender": pid, ...}):`` runs the phase under py-spy."""

    def __init__(self, out_dir: Path, phase: str, pids: Mapping[str, int]) -> None:
        self.out_dir = out_dir
        self.phase = phase
        self.pids = dict(pids)
        self._procs: list[subprocess.Popen[bytes]] = []
        self.files: list[Path] = []

    def __enter__(self) -> Recording:
        binary = py_spy()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            for role, pid in self.pids.items():
                out = self.out_dir / f"{self.phase}-{role}.svg"
                self._procs.append(
                    subprocess.Popen(
                        [str(binary), "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE), "--nonblocking",
                         "--format", "flamegraph", "--output", str(out)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )
                )
                self.files.append(out)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop()

    def _stop(self) -> None:
        # py-spy writes its output when interrupted.
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        for proc in self._procs:
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

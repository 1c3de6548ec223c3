"""Running one drill: back end up, workload on, scenario, drain, check, report.

``run_drill`` is the library entry point (the CLI and the tests call it). The
``Drill`` object is what scenarios see: the back end (called from a worker
thread, so the workload keeps running during a blocking fault), the
workload, the clock, fault windows and recovery waits. The verdict comes from
``checker.check`` over the recorded history only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from xchat_chaos.backend import Backend
from xchat_chaos.checker import Verdict, check
from xchat_chaos.history import Fault, History
from xchat_chaos.replication import replication_cost
from xchat_chaos.scenarios import SCENARIOS
from xchat_chaos.workload import User, Workload, WorkloadSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Documented bounds (docs/chaos.md): a drill fails past them.
DEFAULT_RTO_BOUND_S = 30.0
DEFAULT_RECOVERY_BOUND_S = 90.0


@dataclass(frozen=True, slots=True)
class DrillSettings:
    # Traffic before the first fault (s): the "before" phase of the report.
    warmup_s: float = 8.0
    # How long a fault lasts (s); flapping halves it per flap.
    fault_s: float = 10.0
    # Traffic after the last fault is undone (s): the "after" phase.
    settle_s: float = 8.0
    # Pause between steps of rolling restarts and flaps (s).
    step_s: float = 3.0
    # After sending stops, how long acked messages may take to arrive (s).
    drain_s: float = 45.0
    rto_bound_s: float = DEFAULT_RTO_BOUND_S
    recovery_bound_s: float = DEFAULT_RECOVERY_BOUND_S
    latency_ms: int = 50
    flaps: int = 3
    # Messages per user sent back-to-back right at the fault.
    burst: int = 8
    # Per-message processing time of the device kept mid-backlog at the fault (s).
    backlog_slow_s: float = 0.1
    measure_replication: bool = True
    workload: WorkloadSettings = field(default_factory=WorkloadSettings)


@dataclass
class DrillResult:
    scenario: str
    backend: str
    history: History
    verdict: Verdict
    notes: dict[str, Any]
    recoveries: list[dict[str, Any]]
    failures: list[str]
    settings: DrillSettings

    @property
    def passed(self) -> bool:
        return not self.failures


class Drill:
    def __init__(self, backend: Backend, settings: DrillSettings, workdir: Path, progress: Callable[[str], None]) -> None:
        self.backend = backend
        self.settings = settings
        self.history = History()
        self.epoch = time.monotonic()
        self.workload = Workload(
            regions=backend.regions,
            endpoints=backend.endpoints,
            workdir=workdir / "clients",
            settings=settings.workload,
            history=self.history,
            epoch=self.epoch,
            # The mesh CA when the back end reaches a TLS mesh (kind); None: plaintext.
            root_certificates=getattr(backend, "root_certificates", None),
        )
        self.notes: dict[str, Any] = {}
        self.recoveries: list[dict[str, Any]] = []
        # Guarantees a scenario checks itself (e.g. regions ready through an upgrade): each fails the drill.
        self.problems: list[str] = []
        self._progress = progress
        self._paused: list[User] = []

    def now(self) -> float:
        return time.monotonic() - self.epoch

    def note(self, key: str, value: Any) -> None:
        self.notes[key] = value

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking back-end call off the event loop."""
        return await asyncio.to_thread(fn, *args)

    async def hold(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    @contextlib.asynccontextmanager
    async def fault(self, name: str, region: str | None) -> AsyncIterator[None]:
        start = self.now()
        self._progress(f"fault {name}" + (f" on {region}" if region else ""))
        try:
            yield
        finally:
            self.history.faults.append(Fault(name, start, self.now(), region))
            self._progress(f"undone {name}")

    async def recovered(self, name: str) -> None:
        """Waits for full redundancy (all replicas current) and records how long it took."""
        self._progress(f"waiting for full redundancy after {name}")
        started = self.now()
        deadline = started + self.settings.recovery_bound_s
        state = await self.call(self.backend.redundancy)
        while not state.ok and self.now() < deadline:
            await asyncio.sleep(0.5)
            state = await self.call(self.backend.redundancy)
        self.recoveries.append(
            {"after": name, "seconds": round(self.now() - started, 2), "ok": state.ok, "problems": list(state.problems)}
        )

    def pause_for_backlog(self) -> None:
        """Keeps the first user of every region offline so a backlog builds up."""
        seen: set[str] = set()
        for user in self.workload.users:
            if user.region not in seen:
                seen.add(user.region)
                self.workload.pause_receiver(user)
                self._paused.append(user)

    def backlog_user(self, region: str) -> User | None:
        """Brings the paused devices back; returns the one of ``region`` (for the caller to resume slowly)."""
        chosen = None
        for user in self._paused:
            if user.region == region:
                chosen = user
            else:
                self.workload.resume_receiver(user)
        self._paused = []
        if chosen is not None:
            self.note("backlog_user", chosen.name)
        return chosen

    async def replication_cost(self) -> dict[str, Any] | None:
        region = self.backend.regions[0]
        urls = self.backend.nats_urls(region)
        if not urls:
            return None
        try:
            return await self.call(replication_cost, urls, region)
        except Exception as exc:  # noqa: BLE001 - a probe, never a verdict
            log.warning("replication cost probe failed: %s", exc)
            return {"error": str(exc)}


async def run_drill(
    scenario: str,
    backend: Backend,
    settings: DrillSettings,
    workdir: Path,
    *,
    progress: Callable[[str], None] = lambda _text: None,
) -> DrillResult:
    """Runs ``scenario`` on a started ``backend``; the caller owns the back end's lifetime."""
    spec = SCENARIOS[scenario]
    drill = Drill(backend, settings, workdir, progress)
    progress("measuring R3 vs R1 publish cost")
    if settings.measure_replication:
        drill.note("replication_cost", await drill.replication_cost())
    progress("registering users")
    await drill.workload.setup()
    drill.epoch = time.monotonic()
    drill.workload._epoch = drill.epoch  # the history's t=0 is the start of checked traffic
    try:
        if spec.backlog:
            drill.pause_for_backlog()
        drill.workload.start_sending()
        progress("steady traffic (before)")
        await drill.hold(settings.warmup_s)
        await spec.run(drill)
        for user in drill._paused:
            drill.workload.resume_receiver(user)
        progress("steady traffic (after)")
        await drill.hold(settings.settle_s)
        await drill.workload.stop_sending()
        drill.history.duration = drill.now()
        progress("draining")
        await drill.workload.drain(settings.drain_s)
        # Deliveries seen while draining count; the checked period ends now.
        drill.history.duration = drill.now()
    finally:
        await drill.workload.close()
    verdict = check(drill.history)
    failures = verdict.failures(rto_bound=settings.rto_bound_s)
    for rec in drill.recoveries:
        if not rec["ok"]:
            failures.append(f"no full redundancy {settings.recovery_bound_s:.0f}s after {rec['after']}: {rec['problems']}")
    if verdict.attempted == 0:
        failures.append("the workload sent nothing")
    failures.extend(drill.problems)
    return DrillResult(scenario, backend.name, drill.history, verdict, drill.notes, drill.recoveries, failures, settings)

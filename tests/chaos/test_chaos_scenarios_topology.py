"""The scale-region and upgrade scenarios' own checks, over a fake back end (no mesh, no traffic)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xchat_chaos.drill import Drill, DrillSettings
from xchat_chaos.monitoring import Redundancy, Topology
from xchat_chaos.scenarios import scale_region, upgrade

FAST = DrillSettings(step_s=0.0, fault_s=0.0)


class FakeBackend:
    name = "fake"

    def __init__(self, ready: Iterator[int], *, moved_to_new: bool = True) -> None:
        self._regions = ["a", "b", "c"]
        self._ready = ready
        self.moved_to_new = moved_to_new
        self.calls: list[tuple[str, str | None]] = []

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(self._regions)

    def nodes(self, region: str) -> list[str]:
        return [f"{region}0"]

    def endpoints(self, region: str) -> list[str]:
        return []

    def topology(self) -> Topology:
        return Topology("a0", {"XCHAT_MAILBOX": "b0"}, {f"{r}0": r for r in self._regions})

    def redundancy(self) -> Redundancy:
        return Redundancy(True)

    def ready_regions(self) -> list[str]:
        return self._regions[: next(self._ready, len(self._regions))]

    def add_region(self, region: str) -> None:
        self.calls.append(("add", region))
        self._regions.append(region)

    def drain_region(self, region: str) -> dict[str, list[str]]:
        self.calls.append(("drain", region))
        holder = "d0" if self.moved_to_new else f"{region}0"
        return {"XCHAT_MAILBOX": ["a0", "c0", holder], "KV_xchat_devices": ["a0", "c0", holder]}

    def remove_region(self, region: str) -> None:
        self.calls.append(("remove", region))
        self._regions.remove(region)

    def upgrade_plan(self) -> list[str | None]:
        return list(self._regions)

    def upgrade(self, step: str | None) -> dict[str, Any]:
        self.calls.append(("upgrade", step))
        return {"region": step}


def drill(backend: FakeBackend, tmp_path: Path) -> Drill:
    return Drill(backend, FAST, tmp_path, lambda _text: None)  # type: ignore[arg-type]


async def test_scale_region_adds_then_drains_and_removes_the_mailbox_leaders_region(tmp_path: Path) -> None:
    backend = FakeBackend(iter([]))
    d = drill(backend, tmp_path)
    await scale_region(d)
    assert backend.calls == [("add", "d"), ("drain", "b"), ("remove", "b")]
    assert [f.name for f in d.history.faults] == ["add-region-d", "drain-b", "remove-b"]
    assert d.notes["new_region_holds_every_stream"] and d.problems == []
    assert d.notes["regions_after"] == ["a", "c", "d"]


async def test_scale_region_fails_when_the_new_region_got_no_replica(tmp_path: Path) -> None:
    d = drill(FakeBackend(iter([]), moved_to_new=False), tmp_path)
    await scale_region(d)
    assert d.problems and "does not hold a replica of every stream" in d.problems[0]


async def test_an_upgrade_that_leaves_one_region_ready_fails_the_drill(tmp_path: Path) -> None:
    # Regions b and c fail two samples in a row (1 s): down, not a missed probe.
    backend = FakeBackend(iter([3, 2, 1, 1, 2, 3] + [3] * 100))
    d = drill(backend, tmp_path)
    # Slow steps, so the sampler (every 0.5 s) sees the dip.
    real_upgrade = backend.upgrade

    def slow_upgrade(step: str | None) -> dict[str, Any]:
        import time

        time.sleep(0.6)
        return real_upgrade(step)

    backend.upgrade = slow_upgrade  # type: ignore[method-assign]
    await upgrade(d)
    assert [c for c in backend.calls] == [("upgrade", "a"), ("upgrade", "b"), ("upgrade", "c")]
    assert d.notes["min_ready_regions"] == 1
    assert d.problems == ["only 1 region(s) ready at some moment (at least 2 required)"]


async def test_an_upgrade_keeping_two_regions_ready_passes(tmp_path: Path) -> None:
    d = drill(FakeBackend(iter([3, 2, 3, 2] + [3] * 100)), tmp_path)
    await upgrade(d)
    assert d.problems == [] and d.notes["min_ready_regions"] >= 2


async def test_one_missed_probe_is_not_a_region_down_but_is_reported(tmp_path: Path) -> None:
    backend = FakeBackend(iter([3, 2, 1, 2, 3] + [3] * 100))
    d = drill(backend, tmp_path)
    real_upgrade = backend.upgrade

    def slow_upgrade(step: str | None) -> dict[str, Any]:
        import time

        time.sleep(0.6)  # the sampler (every 0.5 s) sees every value
        return real_upgrade(step)

    backend.upgrade = slow_upgrade  # type: ignore[method-assign]
    await upgrade(d)
    assert d.problems == [] and d.notes["min_ready_regions"] == 2
    assert d.notes["min_ready_regions_single_sample"] == 1

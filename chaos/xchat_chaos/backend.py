"""The one small interface every drill back end implements.

Scenarios only speak this interface, so the same scenario runs on the local
mesh (processes on this machine) and on a kind cluster (docker nodes). All
methods are blocking; the runner calls them from a worker thread so the
workload's event loop keeps running through a fault.
"""

from __future__ import annotations

from typing import Any, Protocol

from xchat_chaos.monitoring import Redundancy, Topology


class BackendError(Exception):
    """A back end could not carry out a fault or a query (the drill aborts, it is not a verdict)."""


class Backend(Protocol):
    name: str

    @property
    def regions(self) -> tuple[str, ...]: ...

    def nodes(self, region: str) -> list[str]:
        """Names of the NATS nodes (servers, or kind nodes) of ``region``."""
        ...

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def endpoints(self, region: str) -> list[str]:
        """gRPC endpoints a user homed in ``region`` uses: its own region's first."""
        ...

    # Whole-region faults.
    def kill_region(self, region: str) -> None: ...
    def restore_region(self, region: str) -> None:
        """Starts a killed region again and returns once it serves."""
        ...

    def freeze_region(self, region: str) -> None: ...
    def thaw_region(self, region: str) -> None: ...
    def partition_region(self, region: str) -> None:
        """Cuts every link between ``region`` and the others, both ways."""
        ...

    def heal_region(self, region: str) -> None: ...

    # Link faults.
    def add_latency(self, ms: int) -> None:
        """Adds ``ms`` of delay each way on every inter-region link."""
        ...

    def clear_latency(self) -> None: ...

    # Single processes / nodes.
    def kill_node(self, node: str) -> None: ...
    def start_node(self, node: str) -> None: ...
    def restart_node(self, node: str) -> None:
        """Graceful restart of one NATS node; returns once it is up again."""
        ...

    def restart_services(self, region: str) -> None: ...

    # NATS access from the drill host (replication-cost probe, leader moves); [] if none.
    def nats_urls(self, region: str) -> list[str]: ...
    def prefer_leader(self, stream: str, region: str) -> None:
        """Best effort: move ``stream``'s leader to a replica in ``region``."""
        ...

    # Topology changes (scale-region): each returns once the step is complete.
    def add_region(self, region: str) -> None:
        """Adds ``region`` to the running mesh; returns once it serves and is a current JetStream peer."""
        ...

    def drain_region(self, region: str) -> dict[str, list[str]]:
        """Moves clients and every replica off ``region``; returns stream -> servers now holding it."""
        ...

    def remove_region(self, region: str) -> None:
        """Stops a drained region and takes it out of the mesh (and its servers out of the meta group)."""
        ...

    # Upgrades: the steps, then each step (a region rolled; None: the platform rolls them all).
    def upgrade_plan(self) -> list[str | None]: ...
    def upgrade(self, step: str | None) -> dict[str, Any]:
        """Carries out one step of ``upgrade_plan``; returns what it measured."""
        ...

    def ready_regions(self) -> list[str]:
        """Regions whose NATS and services are all ready right now."""
        ...

    # Observation (through the NATS monitoring endpoint).
    def topology(self) -> Topology: ...
    def redundancy(self) -> Redundancy: ...

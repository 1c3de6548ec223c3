"""The one small interface every drill back end implements.

Scenarios only speak this interface, so the same scenario runs on the local
mesh (processes on this machine) and on a kind cluster (docker nodes). All
methods are blocking; the runner calls them from a worker thread so the
workload's event loop keeps running through a fault.
"""

from __future__ import annotations

from typing import Protocol

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

    # Observation (through the NATS monitoring endpoint).
    def topology(self) -> Topology: ...
    def redundancy(self) -> Redundancy: ...

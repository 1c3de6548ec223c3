"""A live status page for a running mesh (``xchat up`` serves it): regions, NATS nodes, services,
message rates, backlog, JetStream leaders and replica lag, recent failovers.

:mod:`~xchat.statuspage.readings` parses what one probe reads, :mod:`~xchat.statuspage.collector`
turns successive probes into the page's model, :mod:`~xchat.statuspage.server` serves that model
as JSON next to a static page (``static/``) that polls it. It sees the mesh as an operator's
probes do (monitoring endpoints, gRPC health, ``/metrics``): no NATS credentials, no tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from xchat.statuspage.collector import Collector, Target, targets_from_mesh
from xchat.statuspage.server import StatusPage

__all__ = ["Collector", "StatusPage", "Target", "serve_status_page", "targets_from_mesh"]


def serve_status_page(
    regions: Sequence[Mapping[str, object]], *, root_certificates: bytes | None = None, port: int = 0,
    interval: float | None = None,
) -> StatusPage:
    """Starts the page for the regions of ``LocalMesh.describe()``; the caller closes it."""
    collector = Collector(targets_from_mesh(regions), root_certificates=root_certificates)
    if interval is None:
        return StatusPage(collector, port=port)
    return StatusPage(collector, port=port, interval=interval)

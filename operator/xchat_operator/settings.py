"""Operator settings: one frozen root dataclass of grouped dataclasses.

Loaded once, at the process edge (:func:`from_env`), and passed explicitly;
nothing below ``handlers`` reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from xchat.core.settings import Variable

from .errors import SpecError

DEFAULT_RESYNC_SECONDS = 30.0  # drift + health sweep; a deleted child is also caught at once by its watch
DEFAULT_PROBE_TIMEOUT_SECONDS = 2.0  # one health RPC / HTTP GET; regions are far, but 2 s is already "down"
DEFAULT_PEERING_NAME = "xchat-operator"
DEFAULT_PRIORITY = 100
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_RESYNC_IDLE_SECONDS = 2.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResyncSettings:
    #: seconds between timer runs per mesh: re-apply children (drift) and probe health
    interval: float = DEFAULT_RESYNC_SECONDS
    #: seconds a mesh must be unchanged before the timer runs (avoids racing fresh edits)
    idle: float = DEFAULT_RESYNC_IDLE_SECONDS


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeSettings:
    #: seconds per single probe (gRPC Check or NATS /healthz)
    timeout: float = DEFAULT_PROBE_TIMEOUT_SECONDS
    #: set False to skip network probes entirely (regions then report NotProbed)
    enabled: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class PeeringSettings:
    #: KopfPeering/ClusterKopfPeering object name shared by all replicas
    name: str = DEFAULT_PEERING_NAME
    #: higher wins; replicas must differ, or kopf treats them as a conflict and both pause
    priority: int = DEFAULT_PRIORITY
    #: run without peering (single replica, or tests)
    standalone: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    resync: ResyncSettings = ResyncSettings()
    probes: ProbeSettings = ProbeSettings()
    peering: PeeringSettings = PeeringSettings()
    #: DNS suffix of the cluster, used in NATS routes and client URLs
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    #: identity written to status (which replica reconciled); defaults to the pod name
    identity: str = ""
    #: port of the operator's Prometheus /metrics (xchat_operator.metrics); 0: not served
    metrics_port: int = 0


def _bool(raw: str | None, default: bool) -> bool:
    if raw is None or raw == "":
        return default
    return raw.lower() in ("1", "true", "yes", "on")


def _number(e: Mapping[str, str], name: str, default: float, cast: type = float) -> Any:
    raw = e.get(name)
    if raw is None or raw == "":
        return cast(default)
    try:
        value = cast(raw)
    except ValueError:
        raise SpecError(f"{name}={raw!r} is not {'an integer' if cast is int else 'a number'}") from None
    if value < 0:
        raise SpecError(f"{name}={raw!r} must not be negative")
    return value


def from_env(env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Settings from ``XCHAT_OPERATOR_*``; a malformed value raises SpecError naming the variable."""
    e = os.environ if env is None else env
    return OperatorSettings(
        resync=ResyncSettings(
            interval=_number(e, "XCHAT_OPERATOR_RESYNC_SECONDS", DEFAULT_RESYNC_SECONDS),
            idle=_number(e, "XCHAT_OPERATOR_RESYNC_IDLE_SECONDS", DEFAULT_RESYNC_IDLE_SECONDS),
        ),
        probes=ProbeSettings(
            timeout=_number(e, "XCHAT_OPERATOR_PROBE_TIMEOUT_SECONDS", DEFAULT_PROBE_TIMEOUT_SECONDS),
            enabled=_bool(e.get("XCHAT_OPERATOR_PROBES"), True),
        ),
        peering=PeeringSettings(
            name=e.get("XCHAT_OPERATOR_PEERING", DEFAULT_PEERING_NAME),
            priority=_number(e, "XCHAT_OPERATOR_PRIORITY", DEFAULT_PRIORITY, int),
            standalone=_bool(e.get("XCHAT_OPERATOR_STANDALONE"), False),
        ),
        cluster_domain=e.get("XCHAT_CLUSTER_DOMAIN", DEFAULT_CLUSTER_DOMAIN),
        identity=e.get("XCHAT_OPERATOR_IDENTITY") or e.get("POD_NAME") or e.get("HOSTNAME", ""),
        metrics_port=_number(e, "XCHAT_OPERATOR_METRICS_PORT", 0, int),
    )


OPERATOR = "Operator (`python -m xchat_operator`)"

#: Every variable the operator reads, for docs/configuration.md (``python -m
#: xchat_operator.settings_doc``). ``field`` is the dotted path in OperatorSettings;
#: tests/test_docs_configuration.py checks each default against :func:`from_env`.
VARIABLES: tuple[Variable, ...] = (
    Variable(name="XCHAT_OPERATOR_NAMESPACES", group=OPERATOR, default=None, flag="--namespace",
             meaning="comma-separated namespaces to watch when no namespace flag is given; unset: all namespaces (needs the mesh role bound cluster-wide)"),
    Variable(name="XCHAT_OPERATOR_RESYNC_SECONDS", group=OPERATOR, field="resync.interval", default=DEFAULT_RESYNC_SECONDS,
             meaning="seconds between timer runs per mesh: re-apply children (drift) and probe health"),
    Variable(name="XCHAT_OPERATOR_RESYNC_IDLE_SECONDS", group=OPERATOR, field="resync.idle", default=DEFAULT_RESYNC_IDLE_SECONDS,
             meaning="seconds a mesh must be unchanged before the timer runs (avoids racing fresh edits)"),
    Variable(name="XCHAT_OPERATOR_PROBE_TIMEOUT_SECONDS", group=OPERATOR, field="probes.timeout", default=DEFAULT_PROBE_TIMEOUT_SECONDS,
             meaning="seconds per single probe (gRPC Check or NATS /healthz)"),
    Variable(name="XCHAT_OPERATOR_PROBES", group=OPERATOR, field="probes.enabled", default=True,
             meaning="false: no network probes; regions then report NotProbed"),
    Variable(name="XCHAT_OPERATOR_PEERING", group=OPERATOR, field="peering.name", default=DEFAULT_PEERING_NAME, flag="--peering",
             meaning="KopfPeering/ClusterKopfPeering object shared by all replicas; set, it overrides the flag"),
    Variable(name="XCHAT_OPERATOR_PRIORITY", group=OPERATOR, field="peering.priority", default=DEFAULT_PRIORITY, flag="--priority",
             meaning="higher wins; replicas must differ, or kopf treats them as a conflict and both pause"),
    Variable(name="XCHAT_OPERATOR_STANDALONE", group=OPERATOR, field="peering.standalone", default=False, flag="--standalone",
             meaning="run without peering (one replica, or tests)"),
    Variable(name="XCHAT_CLUSTER_DOMAIN", group=OPERATOR, field="cluster_domain", default=DEFAULT_CLUSTER_DOMAIN,
             meaning="DNS suffix of the cluster, used in NATS routes and client URLs"),
    Variable(name="XCHAT_OPERATOR_IDENTITY", group=OPERATOR, field="identity", default=None,
             meaning="identity written to events and status.reconciledBy; unset: $POD_NAME, else $HOSTNAME"),
    Variable(name="XCHAT_OPERATOR_METRICS_PORT", group=OPERATOR, field="metrics_port", default=0,
             meaning="port of the operator's Prometheus /metrics (the chart sets 9090); 0: not served"),
)

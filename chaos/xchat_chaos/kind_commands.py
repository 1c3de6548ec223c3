"""What the ``kind`` back end says to kubectl and docker: the operator's labels and
selectors, ``--endpoints`` parsing, the relink script for a reconnected node, the
monitoring request run inside NATS pods, and the real command runner.

Kept apart from ``xchat_chaos.kind`` (the fault actions) so each reads as one concept.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

from xchat_chaos.backend import BackendError

Runner = Callable[[Sequence[str]], str]
# One region's endpoint: one address for all four services, or one per service.
Endpoint = Union[str, Mapping[str, str]]
REGION_LABEL = "topology.kubernetes.io/region"
KIND_NETWORK = "kind"
# The operator's labels (operator/xchat_operator/names.py).
APP_LABEL = "app.kubernetes.io/name=xchat"
MESH_LABEL = "xchat.dev/mesh"
REGION_POD_LABEL = "xchat.dev/region"
COMPONENT_LABEL = "app.kubernetes.io/component"
SERVICES = ("auth", "keys", "relay", "mailbox")
GRPC_PORT = 50051
MONITOR_PORT = 8222
READY_TIMEOUT_S = 180.0
DRILL_MANAGER = "xchat-drill"
NETEM_UNSUPPORTED = "link latency is unsupported on this kernel: tc netem failed on the kind nodes (no sch_netem module?)"


def nats_selector(mesh: str) -> str:
    return f"{APP_LABEL},{MESH_LABEL}={mesh},{COMPONENT_LABEL}=nats"


def services_selector(mesh: str) -> str:
    return f"{APP_LABEL},{MESH_LABEL}={mesh},{COMPONENT_LABEL} in ({','.join(SERVICES)})"


def parse_endpoints(text: str) -> dict[str, Endpoint]:
    """``--endpoints``: ``a=host:port,...`` (one address per region) or
    ``a.auth=host:port,a.keys=...`` (one per service; all four for each such region)."""
    out: dict[str, Any] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, sep, addr = item.partition("=")
        if not sep or not key or not addr:
            raise ValueError(f"bad endpoint {item!r}: expected region=host:port or region.service=host:port")
        region, dot, service = key.partition(".")
        if not dot:
            if region in out:
                raise ValueError(f"region {region!r} given twice")
            out[region] = addr
            continue
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r} in {item!r} (one of {', '.join(SERVICES)})")
        per = out.setdefault(region, {})
        if not isinstance(per, dict):
            raise ValueError(f"region {region!r} has both one address and per-service addresses")
        per[service] = addr
    for region, ep in out.items():
        if isinstance(ep, dict) and set(ep) != set(SERVICES):
            missing = sorted(set(SERVICES) - set(ep))
            raise ValueError(f"region {region!r} lacks per-service endpoint(s) for {', '.join(missing)}")
    return out


# Run in a node after `docker network connect`: docker names the new interface
# eth<N>, not eth0, and the node's pod routes went away with the old eth0. Renames
# it back (xchat-cni, kube-proxy and tc all use eth0), restores the default route
# and re-runs xchat-cni (routes to the other nodes' pod /24s).
RELINK_SCRIPT = r"""set -e
dev=$(ip -o link show | sed -nE 's/^[0-9]+: (eth[0-9]+)(@[^:]*)?:.*/\1/p' | tail -1)
if [ -n "$dev" ] && [ "$dev" != eth0 ]; then
  gw=$(ip -4 route show default dev "$dev" | awk '{print $3; exit}')
  ip link set "$dev" down
  ip link set "$dev" name eth0
  ip link set eth0 up
  if [ -n "$gw" ]; then ip route replace default via "$gw" dev eth0; fi
fi
/usr/local/bin/xchat-cni
"""


def monitor_request(query: str) -> list[str]:
    """argv, run inside a NATS pod, that GETs ``query`` from the monitoring port.

    busybox ``nc``, not ``wget``: the static busybox in xchat-nats (Debian's
    busybox-static) crashes in ``wget`` (SIGSEGV, exit 139) in that FROM-scratch image.
    """
    script = f'printf "GET %s HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n" "$1" | nc -w 3 127.0.0.1 {MONITOR_PORT}'
    return ["sh", "-c", script, "sh", query]


def http_body(raw: str) -> str:
    """The body of a raw HTTP/1.0 response; ``ValueError`` unless the status is 200."""
    head, sep, body = raw.replace("\r\n", "\n").partition("\n\n")
    status = head.split("\n", 1)[0].split()
    if not sep or len(status) < 2 or status[1] != "200":
        raise ValueError(f"monitoring answered {head.splitlines()[0] if head else 'nothing'!r}")
    return body


def run_command(argv: Sequence[str]) -> str:
    """The real runner: the command's stdout; failures raise ``BackendError``."""
    try:
        done = subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        stderr = getattr(exc, "stderr", "") or ""
        raise BackendError(f"{' '.join(argv)} failed: {exc} {stderr.strip()}") from exc
    return done.stdout

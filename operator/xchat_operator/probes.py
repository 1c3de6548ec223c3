"""Region health: gRPC ``grpc.health.v1`` Check and NATS ``/healthz``.

A :data:`Prober` is any ``async (kube, spec, region) -> RegionHealth``; the
handlers take it from the operator memo, so tests inject their own.

The default prober never resolves cluster DNS: it reads the ready addresses of
each Service from its EndpointSlices through the API, then dials those pod IPs.
With no ready endpoints (always the case under envtest, where no pods run) it
reports the region not ready with reason ``NoReadyEndpoints`` and sends nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from . import names
from .kube import Kube
from .spec import SERVICE_NAMES, MeshSpec, Region

NATS_HEALTH_PATH = "/healthz?js-enabled-only=true"
NOT_PROBED = "NotProbed"  # the reason of every check when probes are disabled: health unknown


@dataclasses.dataclass(frozen=True, kw_only=True)
class Check:
    ok: bool
    reason: str
    message: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RegionHealth:
    region: str
    nats: Check
    services: Mapping[str, Check]

    @property
    def ready(self) -> bool:
        return self.nats.ok and all(c.ok for c in self.services.values())

    @property
    def reason(self) -> str:
        if self.ready:
            return "Healthy"
        if not self.nats.ok:
            return f"Nats{self.nats.reason}"
        bad = [s for s, c in self.services.items() if not c.ok]
        return f"Service{self.services[bad[0]].reason}"

    @property
    def message(self) -> str:
        parts = [f"nats: {self.nats.reason}"] + [f"{s}: {c.reason}" for s, c in self.services.items()]
        return "; ".join(parts)


Prober = Callable[[Kube, MeshSpec, Region], Awaitable[RegionHealth]]


def ready_addresses(kube: Kube, namespace: str, service: str) -> list[str]:
    slices = kube.list("EndpointSlice", namespace, labels={"kubernetes.io/service-name": service})
    out: list[str] = []
    for s in slices:
        for ep in s.get("endpoints") or ():
            if (ep.get("conditions") or {}).get("ready", False):
                out.extend(ep.get("addresses") or ())
    return out


async def grpc_check(
    address: str, timeout: float, *, root_certificates: bytes | None = None, server_name: str | None = None
) -> Check:
    """grpc.health.v1 Check; over TLS (trusting the mesh CA, verifying ``server_name``) when given a CA."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if root_certificates is not None:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel_cm = grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(root_certificates), options=options)
    else:
        channel_cm = grpc.aio.insecure_channel(address)
    try:
        async with channel_cm as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            resp: Any = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return Check(ok=False, reason="Unreachable", message=f"{address}: {exc.code().name}")
    serving = resp.status == health_pb2.HealthCheckResponse.SERVING
    return Check(ok=serving, reason="Serving" if serving else "NotServing", message=address)


async def nats_check(address: str, timeout: float) -> Check:
    import aiohttp

    url = f"http://{address}:{names.NATS_MONITOR_PORT}{NATS_HEALTH_PATH}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(url) as resp:
                ok = resp.status == 200
                body = (await resp.text())[:200]
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return Check(ok=False, reason="Unreachable", message=f"{url}: {exc!r}")
    return Check(ok=ok, reason="Healthy" if ok else "Unhealthy", message=body)


def make_default_prober(timeout: float) -> Prober:
    async def probe(kube: Kube, spec: MeshSpec, region: Region) -> RegionHealth:
        async def one(service: str, check: Callable[[str], Awaitable[Check]]) -> Check:
            try:
                addrs = await asyncio.to_thread(ready_addresses, kube, spec.namespace, service)
            except Exception as exc:  # the probe must never take the operator down
                return Check(ok=False, reason="LookupFailed", message=str(exc))
            if not addrs:
                return Check(ok=False, reason="NoReadyEndpoints", message=f"service {service} has no ready endpoints")
            return await check(addrs[0])

        nats_svc = names.nats_client_service(spec.name, region.name)
        nats = one(nats_svc, lambda a: nats_check(a, timeout))
        roots = await asyncio.to_thread(mesh_ca, kube, spec) if spec.tls.enabled else None

        def grpc_probe(service: str) -> Callable[[str], Awaitable[Check]]:
            # Pod IPs are dialled directly (no cluster DNS here); the certificate
            # is checked against the name clients use: the Service's DNS name.
            workload = names.service_workload(spec.name, service, region.name)
            server_name = f"{workload}.{spec.namespace}.svc"
            return lambda a: grpc_check(f"{a}:{names.GRPC_PORT}", timeout, root_certificates=roots, server_name=server_name)

        svcs = [one(names.service_workload(spec.name, s, region.name), grpc_probe(s)) for s in SERVICE_NAMES]
        results = await asyncio.gather(nats, *svcs)
        return RegionHealth(region=region.name, nats=results[0], services=dict(zip(SERVICE_NAMES, results[1:])))

    return probe


def mesh_ca(kube: Kube, spec: MeshSpec) -> bytes | None:
    """The CA clients of this mesh trust (``ca.crt`` of its TLS Secret), or None if absent."""
    import base64

    secret = kube.get("Secret", spec.namespace, names.tls_secret(spec))
    data = (secret or {}).get("data") or {}
    return base64.b64decode(data["ca.crt"]) if "ca.crt" in data else None


async def not_probed(kube: Kube, spec: MeshSpec, region: Region) -> RegionHealth:
    """Prober used when probes are disabled."""
    c = Check(ok=False, reason=NOT_PROBED, message="probes disabled")
    return RegionHealth(region=region.name, nats=c, services={s: c for s in SERVICE_NAMES})

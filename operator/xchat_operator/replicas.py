"""Moving a draining region's JetStream replicas to the other regions.

nats-server never moves a replica by itself: an R3 stream whose three regions
include a draining one stays there (``unique_tag``) until a peer is removed
from its group. So while a region is ``Draining`` (its services already scaled
to 0, its NATS still running), every resync pass of the operator runs one
:func:`step`:

1. list the streams and where their replicas sit (``$JS.API.STREAM.LIST``);
2. refuse to touch anything when fewer regions are left than the widest
   stream has replicas (nats-server would drop the replica, not move it:
   ``NoRegionFree``), or when an R1 stream lives only there;
3. a stream led from the region hands its leadership to a current follower
   (``STREAM.LEADER.STEPDOWN``: no 4-9 s election), and only then
4. the region's servers are taken out of its group (``STREAM.PEER.REMOVE``);
   the meta leader places a new replica in the region that holds none (the new
   one), which catches up.

The region reports ``ReplicasMoved`` once no stream has a peer there and every
stream has all its replicas current; ``Drained`` (NATS scaled to 0) is still
the operator's spec edit. Each step is idempotent: a pass that finds a peer
already removed and its replacement catching up only waits.

After a region is removed from the spec, its servers are offline members of
the meta group; :func:`remove_departed` takes them out (``SERVER.REMOVE``) with
the ``jsmeta`` user, the one user of the system account
(:func:`xchat.core.permissions.jsmeta_permissions`: that subject and its inbox).
Only offline servers named like this mesh's pods and absent from the spec.

Before the operator restarts a region's NATS in a roll (``rollout``),
:func:`hand_over_region` steps every stream leader of the region down
(``jsadmin``) and the meta leader (``jsmeta``: ``META.LEADER.STEPDOWN`` towards the
region rolled before), then polls ``STREAM.LIST`` and a NATS pod's ``/jsz`` until no
leader is left there, for at most ``HANDOVER_TIMEOUT_S``: a server restarted with its
leaderships keeps them through its lame-duck period and then leaves them to an
election (clients stalled 31-33 s on kind).

The identity is the ``jsadmin`` NATS user (:func:`xchat.core.permissions.jsadmin_permissions`:
those three subjects and its own inbox, no data, no system account); its
password sits in the mesh's credentials Secret under a key no pod mounts. With
TLS the operator presents the mesh's NATS certificate (clientAuth).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import nats

from xchat.core.permissions import inbox_prefix
from xchat.mesh import jsadmin, placement
from xchat.mesh.jsadmin import JetStreamAdminError, Placement

from . import names
from .kube import Kube
from .spec import MeshSpec, Region, RegionMode

CONNECT_TIMEOUT_S = 3.0
# One pass: list, step-downs and peer removals; a stuck server makes the pass
# report AdminUnavailable instead of holding the resync timer.
STEP_TIMEOUT_S = 20.0
STEP_ROUNDS = 3
STEPDOWN_SETTLE_S = 1.0  # a step-down's new leader shows in STREAM.LIST within a heartbeat

MOVED = "ReplicasMoved"
MOVING = "MovingReplicas"
NO_REGION_FREE = "NoRegionFree"
UNAVAILABLE = "AdminUnavailable"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MoveState:
    """What a pass found: ``reason`` is one of the four constants above."""

    reason: str
    message: str

    @property
    def moved(self) -> bool:
        return self.reason == MOVED


@dataclasses.dataclass(frozen=True, kw_only=True)
class Action:
    """One admin request: ``stepdown`` of a stream's leader, or ``remove`` of ``server`` from it."""

    kind: str
    stream: str
    server: str = ""


def servers_of(spec: MeshSpec, region: Region) -> list[str]:
    """The NATS server names of a region (``server_name: $POD_NAME``)."""
    return [f"{names.nats_statefulset(spec.name, region.name)}-{i}" for i in range(region.nats_nodes)]


def plan(placements: Sequence[Placement], leaving: Iterable[str], free_regions: int,
         requested: Iterable[tuple[str, str]] = ()) -> tuple[list[Action], MoveState]:
    """The requests of one pass, and the state to report. Pure: tested without a server.

    ``free_regions``: regions other than the draining one whose NATS runs.
    ``requested``: (stream, server) removals already sent (not sent twice
    while the meta leader is still re-placing).
    """
    gone, asked = set(leaving), set(requested)
    widest = max((p.replicas for p in placements), default=1)
    if free_regions < widest:
        return [], MoveState(reason=NO_REGION_FREE, message=(
            f"R{widest} streams need {widest} other regions, {free_regions} left: "
            "add a region before draining this one (each replica needs a region of its own)"))
    stranded = [p.stream for p in placements if p.replicas == 1 and gone & set(p.peers)]
    if stranded:
        return [], MoveState(reason=NO_REGION_FREE,
                             message=f"R1 streams {stranded} live only here: nowhere to move them from")
    actions: list[Action] = []
    pending = [p for p in placements if not p.settled_without(gone)]
    for p in pending:
        if p.leader in gone:
            # Removing a leader would leave the stream to an election; hand it over first.
            actions.append(Action(kind="stepdown", stream=p.stream))
            continue
        actions += [Action(kind="remove", stream=p.stream, server=s)
                    for s in p.peers if s in gone and (p.stream, s) not in asked]
    if not pending:
        return [], MoveState(reason=MOVED, message=f"no replica on {sorted(gone)}; {len(placements)} streams current")
    detail = "; ".join(f"{p.stream} on {list(p.peers)} (current {list(p.current)})" for p in pending[:5])
    return actions, MoveState(reason=MOVING, message=f"{len(pending)} streams still moving: {detail}")


async def step(nc: Any, leaving: Sequence[str], free_regions: int,
               requested: set[tuple[str, str]]) -> MoveState:
    """One pass over a connection of the ``jsadmin`` user; adds what it sent to ``requested``.

    A pass that handed leaderships over looks again (up to ``STEP_ROUNDS``)
    so the removals follow in the same pass rather than one resync later.
    """
    for _ in range(STEP_ROUNDS):
        placements = await jsadmin.placements(nc)
        actions, state = plan(placements, leaving, free_regions, requested)
        for action in actions:
            if action.kind == "stepdown":
                await jsadmin.step_down_stream(nc, action.stream)
            else:
                await jsadmin.remove_stream_peer(nc, action.stream, action.server)
                requested.add((action.stream, action.server))
        if not any(a.kind == "stepdown" for a in actions):
            return state
        await asyncio.sleep(STEPDOWN_SETTLE_S)
    return state


def free_regions(spec: MeshSpec, draining: Region) -> list[Region]:
    return [r for r in spec.regions if r.name != draining.name and r.nats_running and not r.down
            and r.mode is not RegionMode.DRAINING]


def _tls_context(data: Mapping[str, str], workdir: str) -> ssl.SSLContext:
    """Trusts the mesh CA and presents the NATS certificate (the servers verify clients)."""
    paths = {}
    for key in ("tls.crt", "tls.key", "ca.crt"):
        path = os.path.join(workdir, key)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as out:
            out.write(data[key])
        paths[key] = path
    ctx = ssl.create_default_context(cafile=paths["ca.crt"])
    ctx.load_cert_chain(paths["tls.crt"], paths["tls.key"])
    return ctx


async def connect(urls: Sequence[str], password: str, tls: ssl.SSLContext | None, *,
                  user: str = names.JSADMIN_USER) -> Any:
    async def quiet(_exc: Exception) -> None:
        return None

    return await nats.connect(servers=list(urls), user=user, password=password, tls=tls,
                              inbox_prefix=inbox_prefix(user).encode(), connect_timeout=CONNECT_TIMEOUT_S,
                              max_reconnect_attempts=1, allow_reconnect=False, error_cb=quiet)


async def move_off(kube: Kube, spec: MeshSpec, region: Region, requested: set[tuple[str, str]], *,
                   cluster_domain: str) -> MoveState:
    """One pass for a ``Draining`` region through a serving region's NATS Service; never raises."""
    free = free_regions(spec, region)
    serving = [r for r in free if r.serving]
    if not serving:
        return MoveState(reason=NO_REGION_FREE, message="no other region serves: nothing to move the replicas to")
    try:
        nc = await _connect_as(kube, spec, serving, names.JSADMIN_USER, cluster_domain)
        if isinstance(nc, str):
            return MoveState(reason=UNAVAILABLE, message=nc)
        try:
            return await asyncio.wait_for(step(nc, servers_of(spec, region), len(free), requested), STEP_TIMEOUT_S)
        finally:
            await nc.close()
    except (JetStreamAdminError, OSError, asyncio.TimeoutError, nats.errors.Error, KeyError) as exc:
        return MoveState(reason=UNAVAILABLE, message=f"JetStream admin API: {exc!r}"[:300])


def server_regions(spec: MeshSpec) -> dict[str, str]:
    """NATS server name -> its region (NATS tells a client names, never tags)."""
    return {server: r.name for r in spec.regions for server in servers_of(spec, r)}


async def keep_hedge_apart(kube: Kube, spec: MeshSpec, *, cluster_domain: str) -> tuple[placement.Move | None, str]:
    """One pass of the placement keeper (:mod:`xchat.mesh.placement`, ADR 0013) as ``jsadmin``:
    the hedge stream's leader out of the mailbox stream's leader's region. Returns (the
    hand-over asked for or None, a problem or ""); never raises."""
    serving = [r for r in spec.regions if r.serving and r.nats_running and not r.down]
    if len(serving) < 2:
        return None, ""  # nowhere to move it to
    region_of = server_regions(spec).get
    try:
        secret = await asyncio.to_thread(kube.get, "Secret", spec.namespace, names.credentials_secret(spec.name))
        password = _decoded(secret).get(names.JSADMIN_USER)
        if not password:
            return None, f"no {names.JSADMIN_USER} password in the credentials Secret yet"
        urls = [f"{'tls' if spec.tls.enabled else 'nats'}://"
                f"{names.fqdn(names.nats_client_service(spec.name, r.name), spec.namespace, cluster_domain)}"
                f":{names.NATS_CLIENT_PORT}" for r in serving]
        with tempfile.TemporaryDirectory(prefix="xchat-jsadmin-") as workdir:
            tls = None
            if spec.tls.enabled:
                tls_secret = await asyncio.to_thread(kube.get, "Secret", spec.namespace, names.tls_secret(spec))
                tls = _tls_context(_decoded(tls_secret), workdir)
            nc = await connect(urls, password, tls)
        try:
            # Never towards a region being drained, marked down or rolled (its leaderships are moving away).
            avoid = {r.name for r in spec.regions if r.mode is not RegionMode.ACTIVE or r.down} | rolling_regions(spec)
            return await asyncio.wait_for(placement.keep_once(nc, region_of, avoid), STEP_TIMEOUT_S), ""
        finally:
            await nc.close()
    except (JetStreamAdminError, OSError, asyncio.TimeoutError, nats.errors.Error, KeyError) as exc:
        return None, f"JetStream admin API: {exc!r}"[:300]


UNKNOWN_NAME = "Server name unknown"  # how nats-server lists a peer it never heard from since its start


def departed(meta: Mapping[str, Any], known: Iterable[str], prefix: str) -> list[str]:
    """Offline meta-group peers named like this mesh's NATS pods that no region of the spec has.

    Never a live server, never another mesh's: only what a removed region (or a
    smaller ``natsNodes``) left behind as an offline member. A meta leader that
    restarted after the region left lists it as "Server name unknown at this
    time (peerID: X)": such a peer is named ``peer_id:X``, and only when every
    server of the spec is a live, current member (so the unknown one is none of
    them, e.g. not a region marked down).
    """
    keep = set(known)
    peers = list(meta.get("replicas") or ())
    live = {str(meta.get("leader") or "")} | {str(p.get("name")) for p in peers if p.get("current") and not p.get("offline")}
    out = []
    for p in peers:
        name = str(p.get("name", ""))
        if not p.get("offline"):
            continue
        if name.startswith(prefix) and name not in keep:
            out.append(name)
        elif name.startswith(UNKNOWN_NAME) and p.get("peer") and keep <= live:
            out.append(f"peer_id:{p['peer']}")
    return sorted(out)


async def remove_servers(system_nc: Any, servers: Iterable[str]) -> list[str]:
    """``SERVER.REMOVE`` of each server over a ``jsmeta`` (system account) connection."""
    removed = []
    for server in servers:
        if server.startswith("peer_id:"):
            answer = await jsadmin.request(system_nc, "$JS.API.SERVER.REMOVE", {"peer_id": server.split(":", 1)[1]})
            if answer.get("error"):
                raise JetStreamAdminError(f"removing {server} from the meta group failed: {answer['error']}")
        else:
            await jsadmin.remove_server(system_nc, server)
        removed.append(server)
    return removed


async def _monitor_json(kube: Kube, spec: MeshSpec, regions: Sequence[Region], query: str,
                        accept: Any = None) -> Mapping[str, Any]:
    """The first ``/jsz``-style document (``accept(doc)`` true) from a ready NATS pod of ``regions``.

    Pod IPs from the client Services' EndpointSlices (what the probes dial): the
    client Service itself carries the client port only (its monitoring port
    would show who is online), and the operator needs no cluster DNS here.
    """
    import aiohttp

    from .probes import ready_addresses

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CONNECT_TIMEOUT_S)) as session:
        for region in regions:
            try:
                addrs = await asyncio.to_thread(ready_addresses, kube, spec.namespace,
                                                names.nats_client_service(spec.name, region.name))
            except Exception:  # noqa: BLE001 - an unreadable EndpointSlice is one region not answering
                continue
            for addr in addrs:
                try:
                    async with session.get(f"http://{addr}:{names.NATS_MONITOR_PORT}{query}") as resp:
                        doc = await resp.json(content_type=None)
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                    continue
                if isinstance(doc, Mapping) and (accept is None or accept(doc)):
                    return doc
    return {}


async def meta_leader(kube: Kube, spec: MeshSpec, regions: Sequence[Region]) -> str | None:
    """The meta leader's server name as a NATS pod of ``regions`` sees it (None: none answered)."""
    doc = await _monitor_json(kube, spec, regions, "/jsz",
                              accept=lambda d: bool((d.get("meta_cluster") or {}).get("leader")))
    return str((doc.get("meta_cluster") or {}).get("leader") or "") or None


async def remove_departed(kube: Kube, spec: MeshSpec, *, cluster_domain: str) -> tuple[list[str], str]:
    """Takes a removed region's servers out of the meta group: (removed, problem or "").

    Without it the meta group keeps them as offline members and needs one more
    live server for its quorum (4 members, 3 live: one more lost region halts it).
    """
    serving = [r for r in spec.regions if r.serving]
    if not serving:
        return [], ""
    known = [s for r in spec.regions for s in servers_of(spec, r)]
    prefix = f"{spec.name}-nats-"
    try:
        # The meta leader's own view (leader-only): the only one listing every peer and whether it is offline.
        doc = await _monitor_json(kube, spec, serving, "/jsz?leader-only=true",
                                  accept=lambda d: bool((d.get("meta_cluster") or {}).get("leader")))
        meta: Mapping[str, Any] = doc.get("meta_cluster") or {}
        gone = departed(meta, known, prefix)
        if not gone:
            return [], ""
        nc = await _connect_as(kube, spec, serving, names.JSMETA_USER, cluster_domain)
        if isinstance(nc, str):
            return [], nc
        try:
            return await asyncio.wait_for(remove_servers(nc, gone), STEP_TIMEOUT_S), ""
        finally:
            await nc.close()
    except (JetStreamAdminError, OSError, asyncio.TimeoutError, nats.errors.Error, KeyError) as exc:
        return [], f"JetStream meta API: {exc!r}"[:300]


async def _connect_as(kube: Kube, spec: MeshSpec, regions: Sequence[Region], user: str,
                      cluster_domain: str) -> Any:
    """A connection of the operator's ``user`` (jsadmin or jsmeta) to ``regions``' NATS, or why not (a str)."""
    secret = await asyncio.to_thread(kube.get, "Secret", spec.namespace, names.credentials_secret(spec.name))
    password = _decoded(secret).get(user)
    if not password:
        return f"no {user} password in the credentials Secret yet"
    urls = [f"{'tls' if spec.tls.enabled else 'nats'}://"
            f"{names.fqdn(names.nats_client_service(spec.name, r.name), spec.namespace, cluster_domain)}"
            f":{names.NATS_CLIENT_PORT}" for r in regions]
    with tempfile.TemporaryDirectory(prefix=f"xchat-{user}-") as workdir:
        tls = None
        if spec.tls.enabled:
            tls_secret = await asyncio.to_thread(kube.get, "Secret", spec.namespace, names.tls_secret(spec))
            tls = _tls_context(_decoded(tls_secret), workdir)
        return await connect(urls, password, tls, user=user)


# -- leadership handover before a region's NATS restarts (rollout) ------------------------

# One handover: step-downs, then polls until no leader is left in the region. Bounded: a
# handover that cannot finish is reported (RollingOut, a Warning event) and the roll goes on,
# as before this existed (an election instead of a hand-over), never held for ever.
HANDOVER_TIMEOUT_S = 20.0
HANDOVER_POLL_S = 0.5


@dataclasses.dataclass(frozen=True, kw_only=True)
class Handover:
    """The outcome of handing a region's leaderships over: ``done`` when none is left there."""

    region: str
    done: bool
    message: str
    stepped_down: tuple[str, ...] = ()


def leaders_in(placements: Sequence[Placement], servers: Iterable[str]) -> list[str]:
    """Replicated streams led from ``servers`` (an R1 stream has nobody to hand over to)."""
    here = set(servers)
    return [p.stream for p in placements if p.leader in here and p.replicas > 1]


async def hand_over(nc: Any, system_nc: Any | None, region: str, servers: Sequence[str],
                    meta_leader_of: Any, prefer_region: str | None, *,
                    timeout: float = HANDOVER_TIMEOUT_S, poll: float = HANDOVER_POLL_S) -> Handover:
    """Steps every stream leader and the meta leader off ``servers``; waits until none is there.

    ``nc``: a ``jsadmin`` connection (STREAM.LIST, STREAM.LEADER.STEPDOWN);
    ``system_nc``: a ``jsmeta`` one (META.LEADER.STEPDOWN towards ``prefer_region``),
    None to leave the meta leader where it is; ``meta_leader_of()``: the meta
    leader's name now (the monitoring endpoint). Never raises for a refusal:
    it is part of the returned message.
    """
    deadline = time.monotonic() + timeout
    stepped: list[str] = []
    problems: list[str] = []
    asked: dict[str, float] = {}  # stream -> when its step-down was last sent
    meta_asked = 0.0
    streams: list[str] = []
    meta: str | None = None
    while True:
        streams = leaders_in(await jsadmin.placements(nc), servers)
        meta = await meta_leader_of()
        meta_here = meta in servers
        if not streams and not meta_here:
            moved = f"stepped down {', '.join(stepped)}" if stepped else "no leader was there"
            return Handover(region=region, done=True, stepped_down=tuple(stepped),
                            message=f"no stream or meta leader in region {region} ({moved})")
        if time.monotonic() >= deadline:
            break
        now = time.monotonic()
        for stream in streams:
            if now - asked.get(stream, -1e9) < 2.0:
                continue  # a step-down just sent: its new leader shows within a heartbeat
            asked[stream] = now
            try:
                await jsadmin.step_down_stream(nc, stream)
                stepped.append(stream)
            except (JetStreamAdminError, nats.errors.Error, asyncio.TimeoutError) as exc:
                problems.append(str(exc)[:160])
        if meta_here and system_nc is not None and now - meta_asked >= 2.0:
            meta_asked = now
            try:
                if prefer_region:
                    await jsadmin.step_down_meta(system_nc, prefer_region)
                else:
                    answer = await jsadmin.request(system_nc, "$JS.API.META.LEADER.STEPDOWN")
                    if answer.get("error"):
                        raise JetStreamAdminError(f"meta leader step-down refused: {answer['error']}")
                stepped.append("meta")
            except (JetStreamAdminError, nats.errors.Error, asyncio.TimeoutError) as exc:
                problems.append(str(exc)[:160])
                prefer_region = None  # the placement may be what was refused: next time, anywhere else
        await asyncio.sleep(poll)
    left = list(streams) + ([f"meta ({meta})"] if meta in servers else [])
    why = f"; {problems[-1]}" if problems else ""
    return Handover(region=region, done=False, stepped_down=tuple(stepped),
                    message=f"leaders still in region {region} after {timeout:.0f}s: {', '.join(left)}{why}"[:300])


def handover_target(spec: MeshSpec, region: Region) -> str | None:
    """Where the meta leadership goes: the serving region before ``region`` (already rolled
    when the regions roll in spec order), else the last one; None when no other serves."""
    others = [r for r in spec.regions if r.name != region.name and r.serving and not r.down]
    if not others:
        return None
    before = [r for r in others if spec.regions.index(r) < spec.regions.index(region)]
    return (before[-1] if before else others[-1]).name


# Regions whose leaderships were handed over for a NATS roll, and when: the placement keeper
# hands the hedge stream to none of them for ROLL_AVOID_S (it would undo the handover).
ROLL_AVOID_S = 300.0
_handed_over: dict[tuple[str, str, str], float] = {}


def rolling_regions(spec: MeshSpec) -> set[str]:
    now = time.monotonic()
    return {region for (ns, mesh, region), at in list(_handed_over.items())
            if ns == spec.namespace and mesh == spec.name and now - at < ROLL_AVOID_S}


async def hand_over_region(kube: Kube, spec: MeshSpec, region: Region, *, cluster_domain: str,
                           timeout: float = HANDOVER_TIMEOUT_S) -> Handover:
    """Before ``region``'s NATS restarts: its leaderships to the other regions (jsadmin, jsmeta); never raises."""
    _handed_over[(spec.namespace, spec.name, region.name)] = time.monotonic()
    others = [r for r in spec.regions if r.name != region.name and r.nats_running and not r.down]
    if not others:
        return Handover(region=region.name, done=False, message="no other region runs NATS: nobody to hand over to")
    dial = [r for r in others if r.serving] or others
    nc = system_nc = None
    try:
        nc = await _connect_as(kube, spec, dial, names.JSADMIN_USER, cluster_domain)
        if isinstance(nc, str):
            return Handover(region=region.name, done=False, message=nc)
        system_nc = await _connect_as(kube, spec, dial, names.JSMETA_USER, cluster_domain)
        if isinstance(system_nc, str):
            system_nc = None  # stream leaders still move; the meta leader is left to its election

        async def meta_now() -> str | None:
            return await meta_leader(kube, spec, [region, *others])

        return await asyncio.wait_for(
            hand_over(nc, system_nc, region.name, servers_of(spec, region), meta_now, handover_target(spec, region),
                      timeout=timeout),
            timeout + STEP_TIMEOUT_S)
    except (JetStreamAdminError, OSError, asyncio.TimeoutError, nats.errors.Error, KeyError) as exc:
        return Handover(region=region.name, done=False, message=f"JetStream admin API: {exc!r}"[:300])
    finally:
        for conn in (nc, system_nc):
            if conn is not None and not isinstance(conn, str):
                await conn.close()


def _decoded(secret: Mapping[str, Any] | None) -> dict[str, str]:
    import base64

    data = (secret or {}).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}

"""The JetStream admin requests behind a local mesh's topology changes and rolls.

Where replicas sit (``$JS.API.STREAM.LIST``), handing leaderships over
(``STREAM.LEADER.STEPDOWN``, ``META.LEADER.STEPDOWN``), moving a replica off a
server (``STREAM.PEER.REMOVE``) and dropping a server from the meta group
(``SERVER.REMOVE``). The meta requests answer the system account only
(``LocalMesh(system_account=True)``). ``xchat.mesh.membership`` (add, drain,
remove a region) and ``xchat.mesh.upgrades`` (roll a region) use them; every
function is a coroutine over one connection the caller opens with
:func:`connect`.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nats

if TYPE_CHECKING:
    from xchat.mesh.local import LocalMesh

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_S = 5.0


class JetStreamAdminError(RuntimeError):
    """A JetStream admin request was refused (the message carries nats-server's description)."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one stream's replicas are, as its leader reports them."""

    stream: str
    replicas: int
    leader: str | None
    followers: tuple[str, ...]
    current: tuple[str, ...]

    @property
    def peers(self) -> tuple[str, ...]:
        return ((self.leader,) if self.leader else ()) + self.followers

    def settled_without(self, leaving: Iterable[str] = ()) -> bool:
        """All replicas placed and current, none on a ``leaving`` server."""
        gone = set(leaving)
        return (
            self.leader is not None
            and self.leader not in gone
            and not gone & set(self.followers)
            and len(self.peers) == self.replicas
            and set(self.current) == set(self.followers)
        )


async def _quiet(exc: Exception) -> None:
    # A server of the list stopping under us is expected here: the client moves on.
    log.debug("jetstream admin connection: %s", exc)


async def connect(mesh: LocalMesh, urls: list[str], *, system: bool = False) -> Any:
    """An admin connection (or the system account's, for the meta requests) to ``urls``."""
    credentials = mesh.system_credentials if system else mesh.admin_credentials
    return await nats.connect(
        servers=urls, connect_timeout=3, max_reconnect_attempts=3, tls=mesh.nats_tls(), error_cb=_quiet, **credentials
    )


async def request(nc: Any, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    reply = await nc.request(subject, json.dumps(body or {}).encode(), timeout=REQUEST_TIMEOUT_S)
    doc: dict[str, Any] = json.loads(reply.data or b"{}")
    return doc


def _refused(answer: dict[str, Any]) -> str | None:
    if answer.get("success") or "error" not in answer:
        return None
    return str((answer.get("error") or {}).get("description") or answer["error"])


async def placements(nc: Any) -> list[Placement]:
    """Every stream (KV buckets included) with its leader and followers."""
    out: list[Placement] = []
    offset = 0
    while True:
        page = await request(nc, "$JS.API.STREAM.LIST", {"offset": offset})
        if (reason := _refused(page)) is not None:
            raise JetStreamAdminError(f"listing streams failed: {reason}")
        streams = page.get("streams") or []
        for info in streams:
            cluster = info.get("cluster") or {}
            followers = cluster.get("replicas") or []
            out.append(
                Placement(
                    stream=info["config"]["name"],
                    replicas=int(info["config"].get("num_replicas") or 1),
                    leader=cluster.get("leader") or None,
                    followers=tuple(f["name"] for f in followers),
                    current=tuple(f["name"] for f in followers if f.get("current") and not f.get("offline")),
                )
            )
        offset += len(streams)
        if not streams or offset >= int(page.get("total") or 0):
            return out


async def step_down_stream(nc: Any, stream: str, *, prefer_region: str | None = None) -> None:
    """The stream's leader hands over to a current follower (no election timeout); with
    ``prefer_region``, to one of that region (a placement, nats-server >= 2.11)."""
    body = {"placement": {"tags": [f"region:{prefer_region}"]}} if prefer_region else None
    answer = await request(nc, f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body)
    if (reason := _refused(answer)) is not None:
        raise JetStreamAdminError(f"stream {stream}: leader step-down refused: {reason}")


async def remove_stream_peer(nc: Any, stream: str, server: str) -> None:
    """Takes ``server`` out of ``stream``'s group; the meta leader places a new replica."""
    answer = await request(nc, f"$JS.API.STREAM.PEER.REMOVE.{stream}", {"peer": server})
    if (reason := _refused(answer)) is not None:
        raise JetStreamAdminError(f"removing {server} from stream {stream} failed: {reason}")


async def step_down_meta(system_nc: Any, prefer_region: str) -> None:
    """Moves the meta leadership to a server of ``prefer_region`` (system account)."""
    answer = await request(system_nc, "$JS.API.META.LEADER.STEPDOWN", {"placement": {"tags": [f"region:{prefer_region}"]}})
    if (reason := _refused(answer)) is not None:
        raise JetStreamAdminError(f"meta leader step-down towards region {prefer_region} refused: {reason}")


async def remove_server(system_nc: Any, server: str) -> None:
    """Drops a stopped ``server`` from the meta group (system account)."""
    answer = await request(system_nc, "$JS.API.SERVER.REMOVE", {"peer": server})
    if (reason := _refused(answer)) is not None:
        raise JetStreamAdminError(f"removing {server} from the meta group failed: {reason}")


def meta_group(mesh: LocalMesh) -> tuple[str | None, set[str] | None]:
    """(meta leader, its group when every peer is current, else None), from ``/jsz``."""
    for node in mesh.all_nodes:
        try:
            with urllib.request.urlopen(f"http://{node.host}:{node.http_port}/jsz", timeout=1) as resp:
                meta = json.loads(resp.read()).get("meta_cluster") or {}
        except (OSError, ValueError):
            continue
        if meta.get("leader") != node.name:
            continue
        peers = meta.get("replicas") or []
        if any(not p.get("current") or p.get("offline") for p in peers):
            return node.name, None
        return node.name, {node.name, *(p["name"] for p in peers)}
    return None, None

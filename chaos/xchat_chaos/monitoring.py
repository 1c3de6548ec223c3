"""Reading the NATS monitoring endpoint (``/jsz``): leaders and replica currency.

Pure parsing of ``/jsz?streams=true`` documents (one per reachable server)
into a ``Topology`` (where the meta leader and each stream leader sit) and a
``Redundancy`` verdict (every stream has a leader and all its replicas are
current; the meta group is complete). Back ends fetch the documents their own
way (HTTP on the local mesh, ``kubectl exec`` on kind).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

JSZ_QUERY = "/jsz?streams=true&config=true"
# A peer heard from longer ago than this is not current, whatever its flag says
# (a leader cut off from its followers keeps reporting them "current" for a while;
# Raft heartbeats are ~1 s).
MAX_ACTIVE_NS = 4_000_000_000
MAILBOX_STREAM = "XCHAT_MAILBOX"
# Where relay writes while the mailbox stream has no leader (ADR 0013).
HEDGE_STREAM = "XCHAT_MAILBOX_HEDGE"


@dataclass(frozen=True, slots=True)
class Topology:
    meta_leader: str | None
    # stream name -> leader server name
    stream_leaders: dict[str, str] = field(default_factory=dict)
    # server name -> region
    server_regions: dict[str, str] = field(default_factory=dict)

    def region_of(self, server: str | None) -> str | None:
        return self.server_regions.get(server or "")

    @property
    def meta_leader_region(self) -> str | None:
        return self.region_of(self.meta_leader)

    @property
    def mailbox_leader_region(self) -> str | None:
        return self.region_of(self.stream_leaders.get(MAILBOX_STREAM))


@dataclass(frozen=True, slots=True)
class Redundancy:
    ok: bool
    problems: tuple[str, ...] = ()
    streams: int = 0


def topology(documents: Mapping[str, Mapping[str, Any]], server_regions: Mapping[str, str]) -> Topology:
    """``documents``: server name -> its ``/jsz`` document (unreachable servers left out)."""
    meta_votes: dict[str, int] = {}
    leaders: dict[str, str] = {}
    for server, doc in documents.items():
        meta = doc.get("meta_cluster") or {}
        if meta.get("leader"):
            meta_votes[meta["leader"]] = meta_votes.get(meta["leader"], 0) + 1
        for stream in _streams(doc):
            cluster = stream.get("cluster") or {}
            if cluster.get("leader") == server:
                leaders[stream["name"]] = server
    meta_leader = max(meta_votes, key=lambda s: meta_votes[s]) if meta_votes else None
    return Topology(meta_leader, leaders, dict(server_regions))


def _fresh(peer: Mapping[str, Any]) -> bool:
    return bool(peer.get("current")) and not peer.get("offline") and int(peer.get("active") or 0) < MAX_ACTIVE_NS


def redundancy(
    documents: Mapping[str, Mapping[str, Any]],
    *,
    servers: Iterable[str],
    replicas: int,
    routes: Mapping[str, Mapping[str, Any]] | None = None,
) -> Redundancy:
    """Full redundancy: every server answers and routes to every other one (``/routez``
    documents, when given), all agree on the leaders; the meta leader hears every peer;
    every stream's leader hears ``replicas - 1`` current followers."""
    expected = set(servers)
    problems = [f"server {s} not answering" for s in sorted(expected - set(documents))]
    for server, doc in sorted((routes or {}).items()):
        connected = {r.get("remote_name") for r in doc.get("routes") or []}
        missing = sorted(expected - connected - {server})
        if missing:
            problems.append(f"server {server} has no route to {missing}")
    meta_leaders = {(doc.get("meta_cluster") or {}).get("leader") for doc in documents.values()}
    if len(meta_leaders) != 1 or None in meta_leaders:
        problems.append(f"servers disagree on the meta leader: {sorted(str(m) for m in meta_leaders)}")
    else:
        leader = next(iter(meta_leaders))
        leader_doc = documents.get(str(leader))
        if leader_doc is None:
            problems.append(f"meta leader {leader} not answering")
        else:
            peers = (leader_doc.get("meta_cluster") or {}).get("replicas") or []
            if len(peers) + 1 < len(expected):
                problems.append(f"meta group has {len(peers) + 1} of {len(expected)} servers")
            stale = [p.get("name") for p in peers if not _fresh(p)]
            if stale:
                problems.append(f"meta peers not current: {stale}")
    leaders: dict[str, set[str]] = {}
    views: dict[tuple[str, str], dict[str, Any]] = {}
    for server, doc in documents.items():
        for stream in _streams(doc):
            leader = (stream.get("cluster") or {}).get("leader")
            leaders.setdefault(stream["name"], set()).add(str(leader))
            views[(stream["name"], server)] = stream
    for name, seen in sorted(leaders.items()):
        if len(seen) != 1 or "None" in seen:
            problems.append(f"stream {name}: no agreed leader ({sorted(seen)})")
            continue
        leader_view = views.get((name, next(iter(seen))))
        if leader_view is None:
            problems.append(f"stream {name}: leader {next(iter(seen))} not answering")
            continue
        stream = leader_view
        followers = (stream.get("cluster") or {}).get("replicas") or []
        want = _configured_replicas(stream, replicas) - 1
        current = [f for f in followers if _fresh(f)]
        if len(current) < want:
            lag = {f.get("name"): f.get("lag", 0) for f in followers if f not in current}
            problems.append(f"stream {name}: {len(current)}/{want} followers current, behind: {lag}")
    return Redundancy(not problems, tuple(problems), len(leaders))


def _configured_replicas(stream: Mapping[str, Any], default: int) -> int:
    config = stream.get("config") or {}
    return int(config.get("num_replicas") or default)


def _streams(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for account in doc.get("account_details") or []:
        out.extend(account.get("stream_detail") or [])
    return out


def fetch_jsz(base_url: str, *, timeout: float = 2.0, query: str = JSZ_QUERY) -> dict[str, Any] | None:
    """One server's ``/jsz`` document over HTTP; None when it does not answer (dead, frozen, cut)."""
    try:
        with urllib.request.urlopen(base_url + query, timeout=timeout) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except (urllib.error.URLError, OSError, ValueError):
        return None

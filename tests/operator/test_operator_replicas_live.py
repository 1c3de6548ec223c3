"""The operator's replica move (``xchat_operator.replicas``) against a real 4-region nats-server cluster.

Four servers tagged ``region:a..d`` with the operator's ``unique_tag`` rule and
two users rendered from ``xchat.core.permissions``: an unrestricted ``admin``
that creates an R3 stream (placed in three of the four regions) and the
operator's ``jsadmin``. Draining the stream leader's region with ``jsadmin``
alone hands the leadership over, takes the region's server out of the group and
leaves the stream on the three other regions, every message kept. The same
identity is refused everything else a compromised operator might try: reading
or deleting data, purging, subject listing, the meta group, other inboxes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from xchat.core.permissions import JSADMIN_USER, JSMETA_USER, inbox_prefix, permissions
from xchat.mesh import jsadmin
from xchat.mesh.natsconf import NatsNode, nats_server_binary, password_hash, render
from xchat.mesh.ports import free_port
from xchat.mesh.processes import Supervised, wait_until
from xchat_operator import replicas

REGIONS = ("a", "b", "c", "d")
STREAM = "MOVE_ME"
MESSAGES = 50
MOVE_TIMEOUT_S = 90.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[NatsNode], dict[str, str]]]:
    nodes = [NatsNode(name=f"n-{r}", region=r, host="127.0.0.1", client_port=free_port(), cluster_port=free_port(),
                      http_port=free_port(), store_dir=tmp_path / f"js-{r}") for r in REGIONS]
    passwords = {"admin": secrets.token_urlsafe(12), JSADMIN_USER: secrets.token_urlsafe(12),
                 JSMETA_USER: secrets.token_urlsafe(12)}
    users = {"admin": (password_hash(passwords["admin"]), None),
             JSADMIN_USER: (password_hash(passwords[JSADMIN_USER]), permissions(JSADMIN_USER))}
    meta = permissions(JSMETA_USER)
    # The system account exactly as the operator renders it: one user, jsmeta.
    system = ("accounts { SYS: { users: [ { user: %s, password: %s, permissions: { publish: { allow: %s },"
              " subscribe: { allow: %s } } } ] } }\nsystem_account: SYS\n") % (
        json.dumps(JSMETA_USER), json.dumps(password_hash(passwords[JSMETA_USER])),
        json.dumps(list(meta.publish)), json.dumps(list(meta.subscribe)))
    procs = []
    for node in nodes:
        conf = tmp_path / f"{node.name}.conf"
        conf.write_text(render(node, nodes, users=users) + system)
        proc = Supervised(node.name, [str(nats_server_binary()), "-c", str(conf)], log_path=tmp_path / f"{node.name}.log")
        proc.start()
        procs.append(proc)
    try:
        wait_until(lambda: _meta_ready(nodes), timeout=60, interval=0.3, what="a JetStream meta leader over 4 servers")
        PROCS[:] = procs
        yield nodes, passwords
    finally:
        for proc in procs:
            proc.stop()


PROCS: list[Supervised] = []  # the cluster's processes, for a test that stops one


def _meta_leader_view(nodes: list[NatsNode]) -> dict[str, Any]:
    import urllib.request

    for node in nodes:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/jsz?leader-only=true", timeout=1) as resp:
                meta = json.loads(resp.read()).get("meta_cluster") or {}
        except (OSError, ValueError):
            continue
        if meta.get("leader") == node.name:
            return meta
    return {}


def _meta_ready(nodes: list[NatsNode]) -> bool:
    import urllib.request

    for node in nodes:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/jsz", timeout=1) as resp:
                meta = json.loads(resp.read()).get("meta_cluster") or {}
        except OSError:
            return False
        if not meta.get("leader") or len(meta.get("replicas") or []) != len(nodes) - 1:
            return False
    return True


async def _connect(nodes: list[NatsNode], user: str, password: str) -> Any:
    async def quiet(_exc: Exception) -> None:
        return None

    return await nats.connect(servers=[f"nats://127.0.0.1:{n.client_port}" for n in nodes], user=user, password=password,
                              inbox_prefix=inbox_prefix(user).encode(), error_cb=quiet, connect_timeout=3)


@pytest.fixture
async def stream(cluster: tuple[list[NatsNode], dict[str, str]]) -> AsyncIterator[Any]:
    nodes, passwords = cluster
    admin = await _connect(nodes, "admin", passwords["admin"])
    js = admin.jetstream()
    deadline = time.monotonic() + 60
    while True:  # the meta group may still be settling its first leader
        try:
            await js.add_stream(name=STREAM, subjects=["move.>"], num_replicas=3)
            break
        except (nats.js.errors.Error, nats.errors.TimeoutError):
            assert time.monotonic() < deadline, "the cluster never accepted the stream"
            await asyncio.sleep(1)
    for i in range(MESSAGES):
        # A new R3 stream elects its leader after add_stream answers: until then a publish gets
        # "no responders" (seen on a loaded CI machine). The message id makes a retry of a publish
        # that was stored but not acknowledged in time count once.
        while True:
            try:
                await js.publish(f"move.{i % 5}", f"m{i}".encode(), headers={"Nats-Msg-Id": f"m{i}"})
                break
            except (nats.js.errors.NoStreamResponseError, nats.errors.TimeoutError):
                assert time.monotonic() < deadline, "the new stream never elected a leader"
                await asyncio.sleep(0.5)
    try:
        yield admin
    finally:
        await admin.close()


async def _placement(nc: Any) -> jsadmin.Placement:
    (p,) = [p for p in await jsadmin.placements(nc) if p.stream == STREAM]
    return p


async def test_draining_the_leaders_region_moves_its_replica_to_the_free_region(
        cluster: tuple[list[NatsNode], dict[str, str]], stream: Any) -> None:
    nodes, passwords = cluster
    nc = await _connect(nodes, JSADMIN_USER, passwords[JSADMIN_USER])
    try:
        deadline = time.monotonic() + 30
        before = await _placement(nc)
        while before.leader is None or len(before.current) < 2:
            assert time.monotonic() < deadline, f"stream never settled: {before}"
            await asyncio.sleep(0.5)
            before = await _placement(nc)
        leaving = [before.leader]  # the hardest case: the region leads the stream
        free_region = next(n.name for n in nodes if n.name not in before.peers)
        requested: set[tuple[str, str]] = set()
        states = []
        deadline = time.monotonic() + MOVE_TIMEOUT_S
        while True:
            state = await replicas.step(nc, leaving, free_regions=3, requested=requested)
            states.append(state.reason)
            if state.moved:
                break
            assert time.monotonic() < deadline, f"replicas never moved: {state.message}"
            await asyncio.sleep(0.5)
        after = await _placement(nc)
        assert leaving[0] not in after.peers and free_region in after.peers
        assert len(after.peers) == 3 and set(after.current) == set(after.followers)
        assert states[0] == replicas.MOVING and requested == {(STREAM, leaving[0])}
        # Every message is still there, read back on the new group.
        info = await stream.jetstream().stream_info(STREAM)
        assert info.state.messages == MESSAGES
    finally:
        await nc.close()


async def test_too_few_regions_left_moves_nothing(cluster: tuple[list[NatsNode], dict[str, str]], stream: Any) -> None:
    nodes, passwords = cluster
    nc = await _connect(nodes, JSADMIN_USER, passwords[JSADMIN_USER])
    try:
        before = await _placement(nc)
        state = await replicas.step(nc, list(before.peers[:1]), free_regions=2, requested=set())
        assert state.reason == replicas.NO_REGION_FREE and "add a region" in state.message
        assert set((await _placement(nc)).peers) == set(before.peers)
    finally:
        await nc.close()


FORBIDDEN_REQUESTS = (
    f"$JS.API.STREAM.DELETE.{STREAM}",
    f"$JS.API.STREAM.PURGE.{STREAM}",
    f"$JS.API.STREAM.INFO.{STREAM}",  # a subjects_filter would list every mailbox holder
    f"$JS.API.DIRECT.GET.{STREAM}",
    f"$JS.API.STREAM.MSG.GET.{STREAM}",
    f"$JS.API.STREAM.UPDATE.{STREAM}",
    "$JS.API.SERVER.REMOVE",
    "$JS.API.META.LEADER.STEPDOWN",
    f"$JS.API.CONSUMER.CREATE.{STREAM}",
)


async def test_the_jsadmin_identity_is_refused_everything_else(
        cluster: tuple[list[NatsNode], dict[str, str]], stream: Any) -> None:
    nodes, passwords = cluster
    violations: list[str] = []

    async def record(exc: Exception) -> None:
        violations.append(str(exc))

    nc = await nats.connect(servers=[f"nats://127.0.0.1:{n.client_port}" for n in nodes], user=JSADMIN_USER,
                            password=passwords[JSADMIN_USER], inbox_prefix=inbox_prefix(JSADMIN_USER).encode(),
                            error_cb=record)
    try:
        for subject in FORBIDDEN_REQUESTS:
            body = json.dumps({"seq": 1, "subjects_filter": ">", "peer": nodes[0].name}).encode()
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await nc.request(subject, body, timeout=1)
        await nc.publish("move.1", b"forged")  # data: refused
        spy = await nc.subscribe(">")  # everything, other users' inboxes included: refused
        await nc.flush()
        await stream.publish("other.2", b"seen?")
        with pytest.raises(nats.errors.TimeoutError):
            await spy.next_msg(timeout=1)
        info = await stream.jetstream().stream_info(STREAM)
        assert info.state.messages == MESSAGES and info.config.num_replicas == 3
        wait_for = time.monotonic() + 5
        while sum("permissions violation" in v.lower() for v in violations) < len(FORBIDDEN_REQUESTS) + 2:
            assert time.monotonic() < wait_for, violations
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def test_a_removed_regions_offline_server_leaves_the_meta_group(
        cluster: tuple[list[NatsNode], dict[str, str]]) -> None:
    nodes, passwords = cluster
    PROCS[0].stop()  # region a is gone: its server n-a is offline
    live = nodes[1:]
    wait_until(lambda: "n-a" in replicas.departed(_meta_leader_view(live), [n.name for n in live], "n-"),
               timeout=60, interval=0.5, what="n-a offline in the meta group")
    # Live servers and servers another mesh names are never candidates.
    view = _meta_leader_view(live)
    assert replicas.departed(view, [n.name for n in live], "other-") == []
    assert replicas.departed(view, [n.name for n in nodes], "n-") == []
    (gone,) = [p for p in view.get("replicas") or [] if p["name"] == "n-a"]
    nc = await _connect(live, JSMETA_USER, passwords[JSMETA_USER])
    try:
        # By peer id: how a meta leader that restarted after the region left knows it (seen on kind).
        assert await replicas.remove_servers(nc, [f"peer_id:{gone['peer']}"]) == [f"peer_id:{gone['peer']}"]
    finally:
        await nc.close()
    wait_until(lambda: {p["name"] for p in _meta_leader_view(live).get("replicas") or []} | {
        _meta_leader_view(live).get("leader")} == {"n-b", "n-c", "n-d"}, timeout=30, interval=0.5,
        what="a meta group of exactly n-b, n-c, n-d")


async def test_the_jsmeta_identity_is_refused_the_rest_of_the_system_account(
        cluster: tuple[list[NatsNode], dict[str, str]]) -> None:
    nodes, passwords = cluster
    violations: list[str] = []

    async def record(exc: Exception) -> None:
        violations.append(str(exc))

    nc = await nats.connect(servers=[f"nats://127.0.0.1:{n.client_port}" for n in nodes], user=JSMETA_USER,
                            password=passwords[JSMETA_USER], inbox_prefix=inbox_prefix(JSMETA_USER).encode(),
                            error_cb=record)
    try:
        # META.LEADER.STEPDOWN is allowed (the handover before a roll): everything else is refused.
        for subject in ("$JS.API.META.PEER.REMOVE", "$SYS.REQ.SERVER.PING", "$SYS.REQ.SERVER.PING.CONNZ",
                        "$SYS.REQ.ACCOUNT.PING.CONNZ", "$JS.API.STREAM.LIST"):
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await nc.request(subject, b"{}", timeout=1)
        await nc.subscribe("$SYS.>")  # every connect/disconnect event of every account: refused
        await nc.flush()
        wait_for = time.monotonic() + 5
        while sum("permissions violation" in v.lower() for v in violations) < 6:
            assert time.monotonic() < wait_for, violations
            await asyncio.sleep(0.1)
        assert {p["name"] for p in _meta_leader_view(nodes).get("replicas") or []} | {
            _meta_leader_view(nodes).get("leader")} == {n.name for n in nodes}  # nothing was removed
    finally:
        await nc.close()


async def test_handing_a_regions_leaderships_over_before_its_restart(
        cluster: tuple[list[NatsNode], dict[str, str]], stream: Any) -> None:
    """What the operator does before rolling a region's NATS (``replicas.hand_over``), with its
    two identities only: the stream leader (jsadmin, STREAM.LEADER.STEPDOWN) and the meta
    leader (jsmeta, META.LEADER.STEPDOWN towards a chosen region) leave the region; nothing else moves."""
    nodes, passwords = cluster
    nc = await _connect(nodes, JSADMIN_USER, passwords[JSADMIN_USER])
    system = await _connect(nodes, JSMETA_USER, passwords[JSMETA_USER])
    try:
        deadline = time.monotonic() + 30
        before = await _placement(nc)
        while before.leader is None or len(before.current) < 2:
            assert time.monotonic() < deadline, f"stream never settled: {before}"
            await asyncio.sleep(0.5)
            before = await _placement(nc)
        # The region to restart: the stream leader's; move the meta leader there too (the hardest case).
        leaving = before.leader
        region = next(n.region for n in nodes if n.name == leaving)
        deadline = time.monotonic() + 60
        while _meta_leader_view(nodes).get("leader") != leaving:
            assert time.monotonic() < deadline, f"the meta leader never moved to {leaving}"
            try:  # refused ("no replacement peer connected") while that peer is not current yet
                await jsadmin.step_down_meta(system, region)
            except jsadmin.JetStreamAdminError:
                pass
            await asyncio.sleep(1)
        target = next(n for n in nodes if n.name != leaving and n.name in before.peers)

        async def meta_now() -> str | None:
            return str(_meta_leader_view(nodes).get("leader") or "") or None

        started = time.monotonic()
        done = await replicas.hand_over(nc, system, region, [leaving], meta_now, target.region, timeout=20)
        took = time.monotonic() - started
        assert done.done, done.message
        assert STREAM in done.stepped_down and "meta" in done.stepped_down
        after = await _placement(nc)
        assert after.leader not in (None, leaving) and set(after.peers) == set(before.peers)  # moved, not re-placed
        assert _meta_leader_view(nodes).get("leader") == target.name  # where it was asked to go
        assert took < 15, took  # hand-overs, not elections after a timeout
        # Nothing left to do: a second handover only looks.
        again = await replicas.hand_over(nc, system, region, [leaving], meta_now, target.region, timeout=5)
        assert again.done and again.stepped_down == ()
        info = await stream.jetstream().stream_info(STREAM)
        assert info.state.messages == MESSAGES
    finally:
        await nc.close()
        await system.close()


async def test_a_handover_without_the_system_identity_reports_the_meta_leader_left(
        cluster: tuple[list[NatsNode], dict[str, str]], stream: Any) -> None:
    nodes, passwords = cluster
    nc = await _connect(nodes, JSADMIN_USER, passwords[JSADMIN_USER])
    try:
        meta = _meta_leader_view(nodes).get("leader")
        region = next(n.region for n in nodes if n.name == meta)

        async def meta_now() -> str | None:
            return str(_meta_leader_view(nodes).get("leader") or "") or None

        out = await replicas.hand_over(nc, None, region, [meta], meta_now, None, timeout=3, poll=0.5)
        assert not out.done and f"meta ({meta})" in out.message and "after 3s" in out.message
    finally:
        await nc.close()

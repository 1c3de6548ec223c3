"""The placement keeper (xchat.mesh.placement, ADR 0013): the hedge stream's leader never stays
in the mailbox stream's leader's region, or one region's loss takes both streams into an election.

The plan is pure (tested on its own); on a real mesh with per-service NATS users the
keeper (the ``jsadmin`` user: list and step down only) separates leaders put together
within its bound, and leaves the mailbox stream's leader where it is.
"""

from __future__ import annotations

import asyncio
import json
import time

import nats

from xchat.core.permissions import HEDGE_STREAM, MAILBOX_STREAM
from xchat.mesh import jsadmin
from xchat.mesh.jsadmin import Placement
from xchat.mesh.local import LocalMesh
from xchat.mesh.placement import AFTER_MOVE_S, KEEP_INTERVAL_S, PASS_TIMEOUT_S, Move, plan

REGION = {"a0": "a", "b0": "b", "c0": "c"}
# A pass, a hand-over, and the heartbeat that shows the new leader (generous: the machine is shared).
SEPARATION_BOUND_S = KEEP_INTERVAL_S + PASS_TIMEOUT_S / 2 + AFTER_MOVE_S


def _p(stream: str, leader: str | None, followers: tuple[str, ...], current: tuple[str, ...] | None = None) -> Placement:
    return Placement(stream, 3, leader, followers, followers if current is None else current)


def test_leaders_apart_or_unknown_ask_for_nothing() -> None:
    apart = [_p(MAILBOX_STREAM, "a0", ("b0", "c0")), _p(HEDGE_STREAM, "b0", ("a0", "c0"))]
    assert plan(apart, REGION.get) is None
    electing = [_p(MAILBOX_STREAM, None, ("b0", "c0")), _p(HEDGE_STREAM, "a0", ("b0", "c0"))]
    assert plan(electing, REGION.get) is None
    strangers = [_p(MAILBOX_STREAM, "x9", ("b0", "c0")), _p(HEDGE_STREAM, "x9", ("b0", "c0"))]
    assert plan(strangers, REGION.get) is None
    assert plan([_p(MAILBOX_STREAM, "a0", ("b0", "c0"))], REGION.get) is None  # no hedge stream (yet)


def test_shared_region_hands_the_hedge_to_a_current_follower_that_leads_least() -> None:
    together = [
        _p(MAILBOX_STREAM, "a0", ("b0", "c0")),
        _p(HEDGE_STREAM, "a0", ("b0", "c0")),
        _p("KV_xchat_devices", "b0", ("a0", "c0")),
    ]
    assert plan(together, REGION.get) == Move(HEDGE_STREAM, "a0", "a", "c")
    # c lags: only b is a safe hand-over.
    lagging = [_p(MAILBOX_STREAM, "a0", ("b0", "c0")), _p(HEDGE_STREAM, "a0", ("b0", "c0"), current=("b0",))]
    assert plan(lagging, REGION.get) == Move(HEDGE_STREAM, "a0", "a", "b")
    # Nobody current elsewhere: wait rather than hand over to a laggard.
    stuck = [_p(MAILBOX_STREAM, "a0", ("b0", "c0")), _p(HEDGE_STREAM, "a0", ("b0", "c0"), current=())]
    assert plan(stuck, REGION.get) is None


def test_a_region_being_rolled_or_drained_is_never_the_target() -> None:
    together = [_p(MAILBOX_STREAM, "a0", ("b0", "c0")), _p(HEDGE_STREAM, "a0", ("b0", "c0"))]
    assert plan(together, REGION.get, avoid={"b"}) == Move(HEDGE_STREAM, "a0", "a", "c")
    assert plan(together, REGION.get, avoid={"b", "c"}) is None


def test_several_servers_per_region_compare_regions_not_servers() -> None:
    region = {"a0": "a", "a1": "a", "b0": "b", "c0": "c"}.get
    together = [_p(MAILBOX_STREAM, "a0", ("b0", "c0")), _p(HEDGE_STREAM, "a1", ("b0", "c0"))]
    move = plan(together, region)
    assert move is not None and move.from_region == "a" and move.to_region in ("b", "c")


async def _leaders(nc: object) -> dict[str, str | None]:
    return {p.stream: p.leader for p in await jsadmin.placements(nc)}


async def test_the_keeper_separates_leaders_put_in_one_region(fresh_mesh_factory) -> None:
    mesh: LocalMesh = fresh_mesh_factory(nats_auth=True)
    assert mesh.keeper is not None
    nc = await nats.connect(mesh.nats_urls("a"), **mesh.admin_credentials)
    region_of = {n.name: n.region for n in mesh.all_nodes}
    try:
        # The keeper has separated whatever placement the mesh started with.
        deadline = time.monotonic() + 30
        while True:
            leaders = await _leaders(nc)
            if leaders[HEDGE_STREAM] and leaders[MAILBOX_STREAM]:
                if region_of[leaders[HEDGE_STREAM]] != region_of[leaders[MAILBOX_STREAM]]:
                    break
            assert time.monotonic() < deadline, f"leaders never apart: {leaders}"
            await asyncio.sleep(0.5)
        for attempt in range(3):
            home = region_of[leaders[MAILBOX_STREAM]]
            # Put the hedge stream's leader into the mailbox stream's region.
            for _ in range(10):  # refused while a hand-over is still settling ("not leader")
                answer = await nc.request(
                    f"$JS.API.STREAM.LEADER.STEPDOWN.{HEDGE_STREAM}",
                    json.dumps({"placement": {"tags": [f"region:{home}"]}}).encode(),
                    timeout=5,
                )
                if json.loads(answer.data).get("success"):
                    break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError(f"the hedge stream's leader could not be moved to region {home}: {answer.data!r}")
            together_at = time.monotonic()
            seen_together = False
            while True:
                leaders = await _leaders(nc)
                hedge, mailbox = leaders[HEDGE_STREAM], leaders[MAILBOX_STREAM]
                if hedge and mailbox:
                    if region_of[hedge] == region_of[mailbox]:
                        seen_together = True
                    elif seen_together or time.monotonic() - together_at > 0.5:
                        break
                assert time.monotonic() - together_at < SEPARATION_BOUND_S, f"round {attempt}: still together {leaders}"
                await asyncio.sleep(0.1)
            separated_after = time.monotonic() - together_at
            # Only the hedge stream moved.
            assert region_of[leaders[MAILBOX_STREAM]] == home, leaders
            assert separated_after < SEPARATION_BOUND_S
        assert mesh.keeper.keeper.moves, "the keeper never asked for a hand-over"
    finally:
        await nc.close()


def test_local_nats_config_pings_routes(tmp_path) -> None:
    """Route pings every 500 ms, cut after 2 missed: a frozen region leaves the routing in ~1.5 s
    (nats-server's default: 2 minutes, during which requests routed there hang)."""
    mesh = LocalMesh(tmp_path, keep_placement=False)
    config = mesh.nats_config(mesh.all_nodes[0])
    cluster = config[config.index("cluster {"):]
    assert 'ping_interval: "500ms"' in cluster and "ping_max: 2" in cluster


async def test_bootstrap_lets_an_existing_devices_bucket_be_read_from_replicas(fresh_mesh_factory) -> None:
    """A mesh whose devices bucket predates direct gets gets them at the next bootstrap: device
    records stay readable from a replica while the bucket elects a leader (ADR 0013)."""
    mesh: LocalMesh = fresh_mesh_factory(nats_auth=True, regions=("solo",), replicas=1)
    nc = await nats.connect(mesh.nats_urls("solo"), **mesh.admin_credentials)
    try:
        js = nc.jetstream()
        info = await js.stream_info("KV_xchat_devices")
        assert info.config.allow_direct
        info.config.allow_direct = False
        await js.update_stream(info.config)
        assert not (await js.stream_info("KV_xchat_devices")).config.allow_direct
        await asyncio.to_thread(mesh.bootstrap)
        assert (await js.stream_info("KV_xchat_devices")).config.allow_direct
    finally:
        await nc.close()

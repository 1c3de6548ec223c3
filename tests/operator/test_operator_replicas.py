"""The replica-move plan, the jsadmin user in the rendered config, and the status it yields (in memory)."""

from __future__ import annotations

import bcrypt

from xchat.mesh.jsadmin import Placement
from xchat_operator import credentials, natsconfig, replicas, status
from xchat_operator.spec import RegionMode, parse_mesh


def _p(stream: str, leader: str | None, *followers: str, current: tuple[str, ...] | None = None,
       r: int = 3) -> Placement:
    return Placement(stream=stream, replicas=r, leader=leader, followers=followers,
                     current=followers if current is None else current)


def test_a_leader_in_the_region_steps_down_before_any_removal() -> None:
    actions, state = replicas.plan([_p("S", "m-nats-a-0", "m-nats-b-0", "m-nats-c-0")], ["m-nats-a-0"], 3)
    assert actions == [replicas.Action(kind="stepdown", stream="S")] and state.reason == replicas.MOVING


def test_a_follower_in_the_region_is_removed_once() -> None:
    p = _p("S", "m-nats-b-0", "m-nats-a-0", "m-nats-c-0")
    actions, _ = replicas.plan([p], ["m-nats-a-0"], 3)
    assert actions == [replicas.Action(kind="remove", stream="S", server="m-nats-a-0")]
    again, state = replicas.plan([p], ["m-nats-a-0"], 3, requested={("S", "m-nats-a-0")})
    assert again == [] and state.reason == replicas.MOVING


def test_moved_only_when_every_replica_is_placed_and_current() -> None:
    catching_up = _p("S", "m-nats-b-0", "m-nats-c-0", "m-nats-d-0", current=("m-nats-c-0",))
    assert replicas.plan([catching_up], ["m-nats-a-0"], 3)[1].reason == replicas.MOVING
    done = _p("S", "m-nats-b-0", "m-nats-c-0", "m-nats-d-0")
    actions, state = replicas.plan([done], ["m-nats-a-0"], 3)
    assert actions == [] and state.moved


def test_nothing_is_touched_without_a_free_region_or_with_an_r1_stream_there() -> None:
    p = _p("S", "m-nats-b-0", "m-nats-a-0", "m-nats-c-0")
    actions, state = replicas.plan([p], ["m-nats-a-0"], 2)
    assert actions == [] and state.reason == replicas.NO_REGION_FREE and "add a region" in state.message
    actions, state = replicas.plan([p, _p("ONE", "m-nats-a-0", r=1)], ["m-nats-a-0"], 3)
    assert actions == [] and state.reason == replicas.NO_REGION_FREE and "ONE" in state.message


def _mesh(modes: dict[str, str]) -> dict:
    return {"apiVersion": "xchat.dev/v1alpha1", "kind": "XChatMesh",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {"regions": [{"name": n, "mode": m} for n, m in modes.items()]}}


def test_free_regions_and_server_names() -> None:
    spec = parse_mesh(_mesh({"a": "Draining", "b": "Active", "c": "Active", "d": "Active"}))
    assert replicas.servers_of(spec, spec.regions[0]) == ["m-nats-a-0"]
    assert [r.name for r in replicas.free_regions(spec, spec.regions[0])] == ["b", "c", "d"]


def test_the_jsadmin_user_is_rendered_with_only_its_three_subjects() -> None:
    spec = parse_mesh(_mesh({"a": "Active", "b": "Active", "c": "Active"}))
    passwords = credentials.nats_passwords()
    assert "jsadmin" in passwords
    conf = natsconfig._document(spec, spec.regions[0], passwords, "cluster.local")
    (user,) = [u for u in conf["authorization"]["users"] if u["user"] == "jsadmin"]  # type: ignore[index,union-attr]
    assert bcrypt.checkpw(passwords["jsadmin"].encode(), user["password"].encode())
    assert user["permissions"] == {
        "publish": {"allow": ["$JS.API.STREAM.LIST", "$JS.API.STREAM.LEADER.STEPDOWN.*", "$JS.API.STREAM.PEER.REMOVE.*"]},
        "subscribe": {"allow": ["_INBOX_jsadmin.>"]},
    }
    # No password for it (an older caller): not rendered, fails closed.
    without = {k: v for k, v in passwords.items() if k != "jsadmin"}
    conf = natsconfig._document(spec, spec.regions[0], without, "cluster.local")
    assert all(u["user"] != "jsadmin" for u in conf["authorization"]["users"])  # type: ignore[index,union-attr]


def test_the_draining_condition_reports_the_move() -> None:
    spec = parse_mesh(_mesh({"a": "Draining", "b": "Active", "c": "Active", "d": "Active"}))
    assert spec.regions[0].mode is RegionMode.DRAINING
    reasons = {}
    for state in (None, replicas.MoveState(reason=replicas.MOVING, message="1 streams still moving"),
                  replicas.MoveState(reason=replicas.MOVED, message="none left")):
        st = status.mesh_status(spec, {}, moves={"a": state} if state else None)
        (draining,) = [c for c in st["regions"][0]["conditions"] if c["type"] == "Draining"]
        reasons[state.reason if state else None] = (draining["status"], draining["reason"])
    assert reasons == {None: ("True", "ClientsDrained"), replicas.MOVING: ("True", "MovingReplicas"),
                       replicas.MOVED: ("True", "ReplicasMoved")}


def test_the_system_account_holds_only_jsmeta_with_server_remove_and_meta_stepdown() -> None:
    spec = parse_mesh(_mesh({"a": "Active", "b": "Active", "c": "Active"}))
    passwords = credentials.nats_passwords()
    conf = natsconfig._document(spec, spec.regions[0], passwords, "cluster.local")
    assert conf["system_account"] == "SYS"
    (user,) = conf["accounts"]["SYS"]["users"]  # type: ignore[index]
    assert user["user"] == "jsmeta" and bcrypt.checkpw(passwords["jsmeta"].encode(), user["password"].encode())
    assert user["permissions"] == {"publish": {"allow": ["$JS.API.SERVER.REMOVE", "$JS.API.META.LEADER.STEPDOWN"]},
                                   "subscribe": {"allow": ["_INBOX_jsmeta.>"]}}
    # A password rotation of jsmeta is a reload, not a restart (its hash is not in the fingerprint).
    other = {**passwords, "jsmeta": "rotated"}
    assert natsconfig.restart_fingerprint(spec, spec.regions[0]) == natsconfig.restart_fingerprint(spec, spec.regions[0])
    assert natsconfig.nats_config(spec, spec.regions[0], other) != natsconfig.nats_config(spec, spec.regions[0], passwords)


def test_departed_servers_are_offline_ours_and_not_in_the_spec() -> None:
    meta = {"leader": "m-nats-b-0", "replicas": [
        {"name": "m-nats-a-0", "offline": True},   # region a removed: departed
        {"name": "m-nats-c-0", "offline": True},   # still in the spec (down for now): kept
        {"name": "m-nats-d-0", "current": True},   # live: kept
        {"name": "other-nats-a-0", "offline": True},  # another mesh's: kept
    ]}
    assert replicas.departed(meta, ["m-nats-b-0", "m-nats-c-0", "m-nats-d-0"], "m-nats-") == ["m-nats-a-0"]


def test_an_unknown_offline_peer_is_departed_only_when_every_spec_server_is_live() -> None:
    """Seen on kind: the meta leader restarted after region b left and lists it by peer id only."""
    unknown = {"name": "Server name unknown at this time (peerID: 4jz55IDL)", "offline": True, "peer": "4jz55IDL"}
    live = [{"name": "m-nats-c-0", "current": True}, {"name": "m-nats-d-0", "current": True}]
    spec_servers = ["m-nats-a-0", "m-nats-c-0", "m-nats-d-0"]
    meta = {"leader": "m-nats-a-0", "replicas": [unknown, *live]}
    assert replicas.departed(meta, spec_servers, "m-nats-") == ["peer_id:4jz55IDL"]
    # A spec server offline too (e.g. a region marked down): the unknown peer may be it; nothing removed.
    meta = {"leader": "m-nats-a-0", "replicas": [unknown, live[0], {"name": "m-nats-d-0", "offline": True}]}
    assert replicas.departed(meta, spec_servers, "m-nats-") == []


def test_the_placement_keeper_maps_pod_names_to_regions_and_moves_only_the_hedge() -> None:
    """The operator's pass (``keep_hedge_apart``) feeds xchat.mesh.placement the server->region map
    of its pods: both leaders in region a's pod hand the hedge stream to a current follower elsewhere."""
    from xchat.core.permissions import HEDGE_STREAM, MAILBOX_STREAM
    from xchat.mesh import placement

    spec = parse_mesh(_mesh({"a": "Active", "b": "Active", "c": "Active"}))
    regions = replicas.server_regions(spec)
    assert regions == {"m-nats-a-0": "a", "m-nats-b-0": "b", "m-nats-c-0": "c"}
    together = [_p(MAILBOX_STREAM, "m-nats-a-0", "m-nats-b-0", "m-nats-c-0"),
                _p(HEDGE_STREAM, "m-nats-a-0", "m-nats-b-0", "m-nats-c-0", current=("m-nats-c-0",))]
    assert placement.plan(together, regions.get) == placement.Move(HEDGE_STREAM, "m-nats-a-0", "a", "c")
    apart = [together[0], _p(HEDGE_STREAM, "m-nats-b-0", "m-nats-a-0", "m-nats-c-0")]
    assert placement.plan(apart, regions.get) is None
    # The jsadmin user may hand the hedge stream's leadership over (and nothing of the data).
    assert "$JS.API.STREAM.LEADER.STEPDOWN.*" in natsconfig.PERMISSIONS["jsadmin"]


def test_a_region_handed_over_for_a_roll_is_no_placement_target_for_a_while() -> None:
    import time

    spec = parse_mesh(_mesh({"a": "Active", "b": "Active", "c": "Active"}))
    assert replicas.rolling_regions(spec) == set()
    replicas._handed_over[(spec.namespace, spec.name, "b")] = time.monotonic()
    try:
        assert replicas.rolling_regions(spec) == {"b"}
        replicas._handed_over[(spec.namespace, spec.name, "b")] = time.monotonic() - replicas.ROLL_AVOID_S - 1
        assert replicas.rolling_regions(spec) == set()
    finally:
        replicas._handed_over.clear()

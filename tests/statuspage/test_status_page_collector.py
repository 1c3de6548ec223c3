"""The status page's collector in memory: canned monitoring documents, an injected clock, no sockets."""

from __future__ import annotations

import json
import urllib.error
from typing import Any

from xchat.statuspage import Collector, Target, targets_from_mesh

REGIONS = ("a", "b", "c")
SECRET = "s3cret-password-never-shown"


def _jsz(server: str, leader: str, *, stream_leader: str, lag: int = 0) -> dict[str, Any]:
    replicas = [{"name": f"{r}0", "current": lag == 0, "active": 250_000_000, "lag": lag}
                for r in REGIONS if f"{r}0" != stream_leader]
    return {
        "server_name": server,
        "config": {"store_dir": "/var/lib/secret-path"},
        "meta_cluster": {"leader": leader},
        "account_details": [{"name": "$G", "stream_detail": [{
            "name": "XCHAT_MAILBOX", "state": {"messages": 7, "bytes": 700},
            "cluster": {"leader": stream_leader, "replicas": replicas},
        }]}],
    }


def _metrics(accepted: float, delivered: float) -> bytes:
    return (
        "# TYPE xchat_envelopes_total counter\n"
        f'xchat_envelopes_total{{outcome="accepted"}} {accepted}\n'
        f'xchat_envelopes_total{{outcome="delivered"}} {delivered}\n'
        "# TYPE xchat_online_devices gauge\nxchat_online_devices 3.0\n"
        "# TYPE xchat_store_up gauge\nxchat_store_up 1.0\n"
        "# TYPE xchat_mailbox_backlog_messages gauge\nxchat_mailbox_backlog_messages 7.0\n"
    ).encode()


class FakeMesh:
    """URL -> document; a region marked dead refuses every connection."""

    def __init__(self) -> None:
        self.dead: set[str] = set()
        self.meta, self.stream_leader = "a0", "b0"
        self.in_msgs = 100
        self.counters = {r: (10.0, 4.0) for r in REGIONS}
        self.now = 1000.0

    def targets(self) -> list[Target]:
        return targets_from_mesh([
            {"region": r, "grpc": f"127.0.0.1:{i}1", "monitor": [f"http://mon-{r}"], "metrics": f"http://met-{r}/metrics",
             "nats": [f"nats://user:{SECRET}@127.0.0.1:{i}2"]}
            for i, r in enumerate(REGIONS, start=1)
        ])

    def fetch(self, url: str) -> bytes:
        region = url.split("//", 1)[1][4]
        if region in self.dead:
            raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        if url.startswith("http://met-"):
            return _metrics(*self.counters[region])
        if "/healthz" in url:
            return b'{"status":"ok"}'
        if "/varz" in url:
            return json.dumps({"server_name": f"{region}0", "version": "2.12.3", "connections": 2,
                               "in_msgs": self.in_msgs, "out_msgs": self.in_msgs,
                               "cluster": {"authorization": SECRET}}).encode()
        return json.dumps(_jsz(f"{region}0", self.meta, stream_leader=self.stream_leader)).encode()

    def health(self, endpoint: str) -> str:
        region = REGIONS[int(endpoint.rsplit(":", 1)[1][0]) - 1]
        return "UNREACHABLE" if region in self.dead else "SERVING"

    def collector(self) -> Collector:
        return Collector(self.targets(), fetch=self.fetch, health=self.health, clock=lambda: self.now,
                         wall_clock=lambda: 1_796_000_000 + self.now)


def test_a_healthy_mesh_its_leaders_lag_and_rates() -> None:
    fake = FakeMesh()
    collector = fake.collector()
    try:
        first = collector.poll()
        assert first["healthy"] and [r["state"] for r in first["regions"]] == ["healthy"] * 3
        assert first["regions"][0]["metrics"]["accepted_per_s"] is None  # one reading: no rate yet
        fake.now += 2.0
        fake.in_msgs += 50
        fake.counters = {r: (20.0, 10.0) for r in REGIONS}
        snapshot = collector.poll()
    finally:
        collector.close()
    a = snapshot["regions"][0]
    assert a["nodes"][0]["in_msgs_per_s"] == 25.0 and a["nodes"][0]["name"] == "a0"
    assert a["metrics"]["accepted_per_s"] == 5.0 and a["metrics"]["delivered_per_s"] == 3.0
    assert a["metrics"]["online_devices"] == 3.0 and a["metrics"]["backlog_messages"] == 7.0
    assert snapshot["delivery"] == {"accepted_per_s": 15.0, "delivered_per_s": 9.0}
    assert snapshot["meta_leader"] == "a0"
    [mailbox] = snapshot["streams"]
    assert mailbox["leader"] == "b0" and mailbox["leader_region"] == "b" and mailbox["max_lag"] == 0
    assert {r["name"] for r in mailbox["replicas"]} == {"a0", "c0"}
    assert snapshot["events"] == [] and len(snapshot["history"]) == 2


def test_a_lost_region_is_down_its_leaders_move_and_it_comes_back() -> None:
    fake = FakeMesh()
    collector = fake.collector()
    try:
        collector.poll()
        fake.dead.add("b")
        fake.now += 1
        lost = collector.poll()
        # Its followers still name b0 for a moment: the page shows no leader rather than a dead one.
        assert [r["state"] for r in lost["regions"]] == ["healthy", "down", "healthy"]
        assert lost["streams"][0]["leader"] is None and not lost["healthy"]
        assert lost["regions"][1]["metrics"]["up"] is False and lost["regions"][1]["nodes"][0]["error"]
        fake.stream_leader = "c0"
        fake.now += 1
        moved = collector.poll()
        assert moved["streams"][0]["leader"] == "c0"
        fake.dead.clear()
        fake.counters["b"] = (0.0, 0.0)  # a restarted process starts its counters again
        fake.now += 1
        back = collector.poll()
    finally:
        collector.close()
    assert back["healthy"] and back["regions"][1]["metrics"]["accepted_per_s"] is None
    assert [e["text"] for e in back["events"]] == [
        "region b: down \u2192 healthy",
        "XCHAT_MAILBOX leader: none \u2192 c0",
        "XCHAT_MAILBOX leader: b0 \u2192 none",
        "region b: healthy \u2192 down",
    ]


def test_a_node_that_is_not_ready_makes_its_region_degraded() -> None:
    fake = FakeMesh()

    def fetch(url: str) -> bytes:
        if url.startswith("http://mon-c/healthz"):
            raise urllib.error.HTTPError(url, 503, "unavailable", None, None)  # type: ignore[arg-type]
        return fake.fetch(url)

    collector = Collector(fake.targets(), fetch=fetch, health=fake.health)
    try:
        snapshot = collector.poll()
    finally:
        collector.close()
    assert [r["state"] for r in snapshot["regions"]] == ["healthy", "healthy", "degraded"]
    assert snapshot["regions"][2]["nodes"][0]["error"] == "HTTP 503"


def test_nothing_but_named_fields_reaches_the_snapshot() -> None:
    fake = FakeMesh()
    collector = fake.collector()
    try:
        text = json.dumps(collector.poll())
    finally:
        collector.close()
    assert SECRET not in text and "secret-path" not in text and "nats://" not in text

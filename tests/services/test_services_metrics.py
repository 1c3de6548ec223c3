"""Prometheus metrics and request ids, read from the real service processes of a three-region mesh."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import urllib.request
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from xchat.client import Client
from xchat.core.metrics import METRIC_NAMES
from xchat.mesh.local import LocalMesh
from xchat.v1 import keys_pb2

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _scrape_all(mesh: LocalMesh) -> list[Samples]:
    return [await asyncio.to_thread(_scrape, row["metrics"]) for row in mesh.describe()]  # type: ignore[arg-type]


def _total(scrapes: list[Samples], name: str, **labels: str) -> float:
    return sum(
        value for samples in scrapes for (n, lbls), value in samples.items()
        if n == name and all(dict(lbls).get(k) == v for k, v in labels.items())
    )


async def _until(mesh: LocalMesh, check, what: str, timeout: float = 20.0) -> list[Samples]:
    """Scrapes until ``check(scrapes)`` holds (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        scrapes = await _scrape_all(mesh)
        if check(scrapes):
            return scrapes
        assert asyncio.get_running_loop().time() < deadline, f"metrics never showed {what}"
        await asyncio.sleep(0.2)


async def test_every_documented_metric_is_exported_by_every_process(mesh: LocalMesh) -> None:
    scrapes = await _until(mesh, lambda s: all(_total([x], "xchat_store_up") == 1 for x in s), "store up")
    for samples in scrapes:
        names = {name for name, _ in samples}
        # Labelled families without a sample yet have no lines; the unlabelled ones always do.
        assert {"xchat_store_up", "xchat_online_devices", "xchat_build_info", "xchat_mailbox_backlog_messages"} <= names
        assert not any(dict(labels).keys() & {"device", "device_id", "account"} for _, labels in samples)
    assert "xchat_rpc_requests_total" in METRIC_NAMES


async def test_a_send_and_receive_moves_the_counters(mesh: LocalMesh, tmp_path: Path) -> None:
    before = await _scrape_all(mesh)
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("c")
    ) as bob:
        bob_name = f"bob{secrets.token_hex(4)}"
        await alice.register(f"alice{secrets.token_hex(4)}")
        await bob.register(bob_name)
        inbox = bob.messages()
        receive = asyncio.create_task(asyncio.wait_for(anext(inbox), 15))
        await _until(mesh, lambda s: _total(s, "xchat_online_devices") >= 1, "an open Sync")
        await alice.send(bob_name, "counted, never read by the server")
        message = await receive
        await bob.ack(message)

        def moved(scrapes: list[Samples]) -> bool:
            return all(
                _total(scrapes, "xchat_envelopes_total", outcome=o) > _total(before, "xchat_envelopes_total", outcome=o)
                for o in ("accepted", "delivered", "acknowledged")
            )

        after = await _until(mesh, moved, "accepted, delivered and acknowledged envelopes")
        await inbox.aclose()
    ok = "xchat_rpc_requests_total"
    assert _total(after, ok, service="Auth", method="Register", code="OK") >= _total(before, ok, service="Auth", method="Register", code="OK") + 2
    assert _total(after, "xchat_rpc_duration_seconds_count", service="Auth", method="Login") > _total(
        before, "xchat_rpc_duration_seconds_count", service="Auth", method="Login"
    )
    assert _total(after, "xchat_jetstream_publish_duration_seconds_count") > _total(
        before, "xchat_jetstream_publish_duration_seconds_count"
    )


async def test_rate_limit_rejections_are_counted_and_every_call_carries_a_request_id(connect, mesh: LocalMesh) -> None:
    bob = await connect("b")
    await bob.publish_keys(one_time=1, pq=1)
    scraper = await connect("b")
    before = await _scrape_all(mesh)

    async def fetch(i: int) -> tuple[grpc.StatusCode, dict[str, str]]:
        call = scraper.keys.FetchBundles(
            keys_pb2.FetchBundlesRequest(account=bob.account), metadata=(*scraper.md, ("x-request-id", f"scrape-{i}"))
        )
        try:
            await call
        except grpc.aio.AioRpcError as err:
            return err.code(), dict(err.trailing_metadata() or ())
        return grpc.StatusCode.OK, dict(await call.trailing_metadata() or ())

    outcomes = await asyncio.gather(*(fetch(i) for i in range(80)))
    refused = sum(code == grpc.StatusCode.RESOURCE_EXHAUSTED for code, _ in outcomes)
    assert refused > 0
    # The client's id comes back on answered and refused calls alike.
    assert [trailers.get("x-request-id") for _, trailers in outcomes] == [f"scrape-{i}" for i in range(80)]
    after = await _until(
        mesh,
        lambda s: _total(s, "xchat_rate_limited_total") >= _total(before, "xchat_rate_limited_total") + refused,
        "the rate-limit rejections",
    )
    name = "xchat_rpc_requests_total"
    labels = {"service": "Keys", "method": "FetchBundles", "code": "RESOURCE_EXHAUSTED"}
    assert _total(after, name, **labels) >= _total(before, name, **labels) + refused


def _families(url: str) -> set[str]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return {family.name for family in text_string_to_metric_families(reply.read().decode())}


async def test_every_service_metric_the_dashboard_queries_is_in_a_live_scrape(mesh: LocalMesh) -> None:
    dashboard = Path(__file__).resolve().parents[2] / "charts" / "xchat" / "files" / "monitoring" / "dashboards" / "xchat.json"
    exprs = [t["expr"] for panel in json.loads(dashboard.read_text())["panels"] for t in panel["targets"]]
    queried = {n for e in exprs for n in re.findall(r"\b(xchat_[a-z0-9_]+)\b", e) if not n.startswith("xchat_operator_")}
    # A family is declared (HELP/TYPE) even before its first labelled sample.
    wanted = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in queried}
    for row in mesh.describe():
        declared = await asyncio.to_thread(_families, str(row["metrics"]))
        assert wanted - declared == set(), row["region"]

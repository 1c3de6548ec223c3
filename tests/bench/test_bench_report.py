"""The bench's pure parts, in memory: quantiles, medians of repeats, ratios to baselines, targets, the table."""

from __future__ import annotations

from typing import Any

from xchat.bench.profiles import PROFILES, profile
from xchat.bench.receiver import body, parse
from xchat.bench.report import build, table
from xchat.bench.stats import latency_ms, medians, quantile, ratio


def test_quantiles_are_nearest_rank() -> None:
    values = [float(i) for i in range(1, 1001)]
    assert quantile(values, 0.5) == 500 and quantile(values, 0.99) == 990 and quantile(values, 0.999) == 999
    assert quantile([], 0.5) == 0.0 and quantile([7.0], 0.999) == 7.0
    assert latency_ms([0.001, 0.002])["p50_ms"] == 1.0


def test_medians_skip_missing_figures_and_ratios_need_a_baseline() -> None:
    assert medians([{"a": 1.0, "b": None}, {"a": 3.0, "b": 2.0}, {"a": 2.0}]) == {"a": 2.0, "b": 2.0}
    assert ratio(10.0, 4.0) == 2.5 and ratio(None, 4.0) is None and ratio(1.0, 0.0) is None


def test_bodies_carry_run_and_index_at_any_size() -> None:
    assert parse(body(7, 42, 256)) == (7, 42) and len(body(7, 42, 256)) == 256
    assert len(body(1, 2, 16 * 1024)) == 16 * 1024
    assert parse(b"hello") is None


def test_profiles_scale_counts_not_shape() -> None:
    smoke, default = PROFILES["smoke"], PROFILES["default"]
    assert smoke.online_devices < default.online_devices and smoke.backlog < default.backlog
    assert profile("default", online_devices=10_000).online_devices == 10_000
    assert profile("smoke", repeats=2).repeats == 2


def _results() -> dict[str, Any]:
    closed = {"delivered_per_s": 100.0, "p50_ms": 5.0, "p99_ms": 10.0, "server_cpu_us": 900.0, "client_cpu_us": 300.0}
    open_ = {**closed, "rate_per_s": 100.0, "p999_ms": 12.0, "overloaded": 0.0}
    phases = {"closed_1": closed, "closed_64": {**closed, "delivered_per_s": 3000.0}, "open_100": open_, "open_half_peak": open_}
    js = {"publish_sequential_per_s": 500.0, "publish_windowed_per_s": 10000.0, "publish_p50_ms": 1.0, "publish_p99_ms": 2.0,
          "consume_per_s": 50000.0, "stored_bytes_per_message": 300.0, "server_cpu_us_per_publish": 100.0}
    grpc = {"unary_per_s": 1000.0, "stream_per_s": 5000.0, "unary_server_cpu_us": 300.0, "unary_client_cpu_us": 300.0,
            "stream_server_cpu_us": 100.0, "stream_client_cpu_us": 100.0, "unary_p50_ms": 0.5, "unary_p99_ms": 1.0}
    return {
        "profile": "smoke", "repeats": 1,
        "machine": {"cpus": 2, "load_average_before": [1.0, 1.0, 1.0], "load_average_after": [2.0, 1.0, 1.0]},
        "baselines": {"jetstream_256": js, "jetstream_16k": js, "grpc_256": grpc, "grpc_16k": grpc},
        "sdk": {"cross_region_256": phases, "same_region_256": phases, "cross_region_16k": phases},
        "backlog": {"queued": 100.0, "drain_per_s": 6000.0, "stored_bytes_per_message": 1800.0, "server_cpu_us": 200.0},
        "online": {"devices": 1000.0, "server_rss_bytes_per_device": 10240.0, "idle_server_cpu_share": 0.02,
                   "idle_server_cpu_share_no_devices": 0.01, "delivered_per_s_while_online": 2400.0},
    }


def test_ratios_pair_each_figure_with_its_baseline_and_targets_are_judged() -> None:
    report = build(_results(), command="xchat bench --profile smoke")
    closed_64 = report["ratios"]["cross_region_256"]["closed_64"]
    assert closed_64["delivered_per_s"]["jetstream_256.publish_windowed_per_s"] == 0.3
    assert report["ratios"]["cross_region_16k"]["closed_1"]["delivered_per_s"]["jetstream_16k.publish_sequential_per_s"] == 0.2
    assert report["ratios"]["cross_region_256"]["open_100"]["p99_ms"]["jetstream_256.publish_p99_ms"] == 5.0
    assert report["ratios"]["backlog"]["stored_bytes_per_message"]["jetstream_256.stored_bytes_per_message"] == 6.0
    assert report["ratios"]["online"]["idle_server_cpu_share"]["online.idle_server_cpu_share_no_devices"] == 2.0
    assert report["ratios"]["online"]["delivered_per_s_while_online"]["sdk.cross_region_256.closed_64.delivered_per_s"] == 0.8
    met = {t["target"]: t["met"] for t in report["targets"]}
    assert met["64 in flight with the devices online / without"] is False
    assert met["delivered msg/s, 64 in flight (cross-region)"] is True
    assert met["delivered msg/s, one at a time (cross-region)"] is False
    assert met["server KiB per online device"] is True and met["backlog drain msg/s"] is True

    text = table(report)
    assert "| cross_region_256 | 64 in flight | 3,000 | 0.3× |" in text
    assert "| backlog drain msg/s >= 5000" not in text and "| backlog drain msg/s | >= 5000 | 6,000 | yes |" in text

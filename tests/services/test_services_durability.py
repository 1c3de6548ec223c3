"""JetStream is configured for durability: R3, one replica per region, fsync on every write."""

from __future__ import annotations

import nats

from xchat.mesh.local import LocalMesh

STREAMS = ["XCHAT_MAILBOX", "XCHAT_KT", "KV_xchat_accounts", "KV_xchat_devices", "KV_xchat_prekeys", "KV_xchat_refresh", "KV_xchat_challenges",
           "KV_xchat_kt_audit"]


async def test_every_stream_has_one_replica_in_each_region(mesh: LocalMesh) -> None:
    region_of = {node.name: node.region for node in mesh.all_nodes}
    nc = await nats.connect(mesh.nats_urls("a"))
    try:
        js = nc.jetstream()
        for name in STREAMS:
            info = await js.stream_info(name)
            assert info.config.num_replicas == 3, name
            cluster = info.cluster
            assert cluster is not None and cluster.leader is not None
            peers = [cluster.leader, *[r.name for r in cluster.replicas or []]]
            assert sorted(region_of[p] for p in peers) == ["a", "b", "c"], (name, peers)
            if name == "XCHAT_KT":  # the key transparency log is append-only at the store (ADR 0014)
                assert info.config.deny_delete and info.config.deny_purge
    finally:
        await nc.close()


def test_generated_nats_config_fsyncs_every_write(mesh: LocalMesh) -> None:
    for node in mesh.all_nodes:
        config = (mesh.workdir / "nats" / f"{node.name}.conf").read_text()
        assert "sync_interval: always" in config
        assert 'unique_tag: "region:"' in config
        assert f'server_tags: ["region:{node.region}"]' in config

"""Two operator replicas (real processes, kopf peering, distinct priorities) do not fight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xchat_operator.testing import eventually, events_for, mesh_manifest

pytestmark = pytest.mark.envtest

HA_NS = "xchat-ha"


class Replica:
    def __init__(self, envtest_env, name: str, priority: int, log: Path) -> None:
        self.name, self.log = name, log
        env = {**os.environ, "KUBECONFIG": str(envtest_env.kubeconfig), "XCHAT_OPERATOR_IDENTITY": name,
               "XCHAT_OPERATOR_PROBES": "false", "XCHAT_OPERATOR_RESYNC_SECONDS": "60"}
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "xchat_operator", "--namespace", HA_NS, "--peering", "xchat-operator",
                 "--priority", str(priority), "--verbose"],
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: kopf leaves the peering object
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def replicas(envtest_env, kube, tmp_path) -> Iterator[dict[str, Replica]]:
    kube.apply({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                "metadata": {"name": "xchat-operator", "namespace": HA_NS}}, field_manager="envtest")
    started: dict[str, Replica] = {}
    try:
        started["low"] = Replica(envtest_env, "op-low", 10, tmp_path / "low.log")
        eventually(lambda: "xchat operator configured" in started["low"].text(), 60, what="low started")
        started["high"] = Replica(envtest_env, "op-high", 20, tmp_path / "high.log")
        eventually(lambda: "Pausing operations in favour of" in started["low"].text(), 40,
                   what="low replica pauses for high")
        yield started
    finally:
        for r in started.values():
            r.stop()


def test_two_replicas_one_reconciliation(kube, replicas) -> None:
    kube.create(mesh_manifest("ha", namespace=HA_NS))

    def reconciled(n: int):
        m = kube.get("XChatMesh", HA_NS, "ha")
        st = m.get("status") or {}
        return st.get("reconciles") == n and m
    def reconciled_events() -> int:
        return sum(int(e.get("count") or 1) for e in events_for(kube, HA_NS, "ha", "Reconciled"))
    m = eventually(lambda: reconciled(1), 40, what="first reconciliation")
    assert m["status"]["reconciledBy"] == "op-high"

    kube.merge_patch("XChatMesh", HA_NS, "ha", {"spec": {"services": {"relay": {"replicas": 3}}}})
    eventually(lambda: reconciled(2), 60, what="second reconciliation")
    # Events are posted after the status they accompany: wait until both are counted.
    eventually(lambda: reconciled_events() == 2, 40, what="two Reconciled events")
    time.sleep(3)  # a fighting replica would add more
    m = kube.get("XChatMesh", HA_NS, "ha")
    assert m["status"]["reconciles"] == 2 and m["status"]["reconciledBy"] == "op-high"
    messages = [e["message"] for e in events_for(kube, HA_NS, "ha", "Reconciled")]
    assert reconciled_events() == 2, messages
    assert all("[op-high]" in msg for msg in messages) and not any("[op-low]" in msg for msg in messages)
    assert kube.get("Deployment", HA_NS, "ha-relay-a")["spec"]["replicas"] == 3

    # The active replica leaves; the standby takes over.
    replicas["high"].stop()
    eventually(lambda: "Resuming operations after the pause" in replicas["low"].text(), 60, what="low resumes")
    kube.merge_patch("XChatMesh", HA_NS, "ha", {"spec": {"services": {"relay": {"replicas": 4}}}})
    m = eventually(lambda: reconciled(3), 40, what="takeover reconciliation")
    assert m["status"]["reconciledBy"] == "op-low"
    eventually(lambda: kube.get("Deployment", HA_NS, "ha-relay-a")["spec"]["replicas"] == 4, 60)

    kube.delete("XChatMesh", HA_NS, "ha")
    eventually(lambda: kube.get("XChatMesh", HA_NS, "ha") is None, 60, what="ha mesh deleted")

"""JSON-line logs of a real service process: one line per refusal and per call, each with its request id."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from pathlib import Path

import grpc
import grpc.aio

from xchat.client import Client
from xchat.core.logs import JsonFormatter, request_id
from xchat.v1 import keys_pb2, keys_pb2_grpc


def _lines(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


async def test_json_logs_carry_the_request_id_of_a_refused_call(fresh_mesh_factory) -> None:
    mesh = fresh_mesh_factory(extra_env={"XCHAT_LOG_FORMAT": "json", "XCHAT_LOG_LEVEL": "debug"})
    async with grpc.aio.insecure_channel(mesh.regions["a"].endpoint) as channel:
        call = keys_pb2_grpc.KeysStub(channel).CountPrekeys(
            keys_pb2.CountPrekeysRequest(), metadata=(("authorization", "Bearer forged"), ("x-request-id", "rid-42"))
        )
        try:
            await call
            raise AssertionError("a forged token was accepted")
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert dict(err.trailing_metadata() or ()).get("x-request-id") == "rid-42"
    log = mesh.workdir / "logs" / "services-a.log"
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        mine = [line for line in _lines(log) if line.get("request_id") == "rid-42"]
        if {"xchat.refused", "xchat.access"} <= {str(line["logger"]) for line in mine}:
            break
        assert asyncio.get_running_loop().time() < deadline, f"no refusal and access lines for rid-42 in {log}"
        await asyncio.sleep(0.2)
    refused = next(line for line in mine if line["logger"] == "xchat.refused")
    assert refused["code"] == "UNAUTHENTICATED" and refused["method"] == "/xchat.v1.Keys/CountPrekeys"
    access = next(line for line in mine if line["logger"] == "xchat.access")
    assert access["region"] == "a" and access["code"] == "UNAUTHENTICATED" and float(access["duration_ms"]) >= 0  # type: ignore[arg-type]
    assert "forged" not in log.read_text(), "a token never reaches the log"


def test_json_formatter_writes_one_object_per_line() -> None:
    record = logging.LogRecord("xchat.test", logging.WARNING, __file__, 1, "two\nlines %s", ("here",), None)
    token = request_id.set("r1")
    try:
        record.request_id = request_id.get()
        text = JsonFormatter().format(record)
    finally:
        request_id.reset(token)
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "two\nlines here" and line["level"] == "warning" and line["request_id"] == "r1"


async def test_sdk_calls_carry_their_own_request_ids(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh = fresh_mesh_factory(extra_env={"XCHAT_LOG_FORMAT": "json", "XCHAT_LOG_LEVEL": "debug"})
    bob_name = f"bob{secrets.token_hex(4)}"
    async with await Client.open(tmp_path / "b.db", mesh.endpoints("b")) as bob:
        await bob.register(bob_name)
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice:
        await alice.register(f"alice{secrets.token_hex(4)}")
        await alice.send(bob_name, "logged by id, never by content")
    log = mesh.workdir / "logs" / "services-a.log"
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        sends = [line for line in _lines(log) if line.get("logger") == "xchat.access"
                 and str(line.get("method", "")).startswith("/xchat.v1.Relay/Send")]
        if sends:
            break
        assert asyncio.get_running_loop().time() < deadline, "no access line for the SDK's send"
        await asyncio.sleep(0.2)
    # 16 hex digits: made by the SDK (the server's own are 32).
    assert all(re.fullmatch(r"[0-9a-f]{16}", str(line["request_id"])) for line in sends), sends

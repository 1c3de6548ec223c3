"""The SDK as an app installs it: the xchat-sdk wheel alone, at its dependencies' lower bounds.

Builds the wheel (``python -m xchat.client.sdk_wheel``), installs it into a fresh
virtual environment together with exactly the lowest versions pyproject.sdk.toml
allows, then a script in that environment — which cannot import any server code —
registers two accounts, sends, receives and acknowledges against the real mesh.
Needs the package index (pip); CI machines reach it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from xchat.mesh.local import LocalMesh

REPO = Path(__file__).resolve().parents[2]
SDK_PYPROJECT = REPO / "services" / "xchat" / "client" / "pyproject.sdk.toml"

APP = r'''
import asyncio, json, sys, importlib.util
from xchat.client import Client

async def main(endpoints, workdir):
    # Nothing of the servers is installed next to the SDK.
    missing = [m for m in ("nats", "xchat.core", "xchat.relay", "xchat_operator") if importlib.util.find_spec(m.split(".")[0]) is not None
               and (m == "nats" or importlib.util.find_spec(m) is not None)]
    alice = await Client.open(f"{workdir}/alice.db", endpoints)
    bob = await Client.open(f"{workdir}/bob.db", list(reversed(endpoints)))
    try:
        await alice.register("wheel_alice")
        await bob.register("wheel_bob")
        receipts = await alice.send("wheel_bob", "hello from the wheel")
        async def first():
            async for message in bob.messages():
                await bob.ack(message)
                return message
        message = await asyncio.wait_for(first(), 60)
        import grpc, google.protobuf, nacl, cryptography
        print(json.dumps({"text": message.body.decode(), "sender": message.sender_account, "receipts": len(receipts),
                          "server_modules": missing, "grpc": grpc.__version__, "protobuf": google.protobuf.__version__,
                          "pynacl": nacl.__version__, "cryptography": cryptography.__version__,
                          "sdk_file": __import__("xchat.client").client.__file__}))
    finally:
        await alice.close()
        await bob.close()

asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2]))
'''


def lower_bounds() -> dict[str, str]:
    """name -> lowest allowed version, from the SDK's declared dependencies."""
    deps = tomllib.loads(SDK_PYPROJECT.read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)(,<[0-9.]+)?", dep.split("#")[0].strip())
        assert match, f"dependency without a tested lower bound: {dep}"
        out[match.group(1)] = match.group(2)
    return out


@pytest.mark.slow
def test_sdk_wheel_alone_at_lower_bounds_talks_to_a_mesh(mesh: LocalMesh, tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "xchat.client.sdk_wheel", str(tmp_path / "dist")],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = Path(built.stdout.strip().splitlines()[-1])
    env_dir = tmp_path / "app-venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    pins = [f"{name}=={version}" for name, version in lower_bounds().items()]
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel), *pins],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]

    endpoints = [region.endpoint for region in mesh.regions.values()]
    app = subprocess.run([str(python), "-c", APP, json.dumps(endpoints), str(tmp_path)], capture_output=True,
                         text=True, timeout=180, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert app.returncode == 0, app.stderr[-3000:]
    out = json.loads(app.stdout.strip().splitlines()[-1])
    assert out["text"] == "hello from the wheel" and out["sender"] == "wheel_alice" and out["receipts"] >= 1
    assert out["server_modules"] == []
    assert str(env_dir) in out["sdk_file"], "the SDK came from somewhere else than the wheel"
    bounds = {name: _release(v) for name, v in lower_bounds().items()}
    assert _release(out["grpc"]) == bounds["grpcio"] and _release(out["protobuf"]) == bounds["protobuf"]
    assert _release(out["pynacl"]) == bounds["PyNaCl"] and _release(out["cryptography"]) == bounds["cryptography"]


def _release(version: str) -> tuple[int, ...]:
    """1.5 and 1.5.0 are the same release."""
    parts = [int(p) for p in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)

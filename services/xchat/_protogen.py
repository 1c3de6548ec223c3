"""Regenerates the protobuf/gRPC modules in ``xchat.v1`` from ``proto/``.

Generated code is committed (so an installed wheel needs no protoc) and a test
regenerates it into a temporary folder and fails when the committed copy is
stale. Run ``python -m xchat._protogen`` after editing a ``.proto`` file; it
needs the ``test`` extra (grpcio-tools).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
PACKAGE_INIT = '"""Generated protobuf and gRPC modules (do not edit; see xchat._protogen)."""\n'


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "xchat" / "v1").glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Writes ``xchat/v1/*_pb2*.py[i]`` under ``out_root``; returns the files."""
    from grpc_tools import protoc

    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package = out_root / "xchat" / "v1"
    (package / "__init__.py").write_text(PACKAGE_INIT)
    return sorted(p for p in package.iterdir() if p.is_file())


def main() -> None:
    written = generate(REPO_ROOT / "services")
    print(f"wrote {len(written)} files", file=sys.stderr)


if __name__ == "__main__":
    main()

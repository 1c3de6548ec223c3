"""Builds the ``xchat-sdk`` wheel: the client SDK as an app installs it, without any server code.

    python -m xchat.client.sdk_wheel [OUT_DIR]      (or: make sdk-wheel)

Stages ``xchat/client`` (with ``crypto``), ``xchat/v1`` and ``xchat/statements.py``
from this source tree next to ``pyproject.sdk.toml`` (renamed ``pyproject.toml``),
the README and the LICENSE, then runs ``pip wheel`` on the staging folder. The
import-linter contract "The client SDK never imports server code" is what keeps
this set self-contained; tests/packaging/test_sdk_wheel.py installs the wheel
alone (at its dependencies' lower bounds) and talks to a real mesh with it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # services/xchat
REPO = PACKAGE_ROOT.parents[1]
# What the SDK imports: itself, the generated stubs, the signed statements' format.
SDK_PARTS = ("client", "v1", "statements.py", "__init__.py", "py.typed")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "pyproject.sdk.toml", "sdk_wheel.py")


def stage(into: Path) -> Path:
    """Copies the SDK's files into ``into`` (a fresh folder) and returns it."""
    package = into / "xchat"
    package.mkdir(parents=True)
    for part in SDK_PARTS:
        source = PACKAGE_ROOT / part
        if source.is_dir():
            shutil.copytree(source, package / part, ignore=IGNORE)
        elif source.exists():
            shutil.copy2(source, package / part)
    shutil.copy2(PACKAGE_ROOT / "client" / "pyproject.sdk.toml", into / "pyproject.toml")
    shutil.copy2(REPO / "LICENSE", into / "LICENSE")
    shutil.copy2(REPO / "README.md", into / "README.md")
    return into


def build(out_dir: Path) -> Path:
    """Builds the wheel into ``out_dir``; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xchat-sdk-") as tmp:
        staged = stage(Path(tmp) / "sdk")
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out_dir), str(staged)],
            check=True,
        )
    (wheel,) = sorted(out_dir.glob("xchat_sdk-*.whl"), key=lambda p: p.stat().st_mtime)[-1:]
    return wheel


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else REPO / "dist"
    try:
        print(build(out))
    except subprocess.CalledProcessError as exc:
        print(f"sdk-wheel: pip wheel failed with exit code {exc.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The protos as a buf module: lint clean, no breaking change against the last released API.

``proto/buf.yaml`` is the module; ``proto/released/xchat-v1-<version>.txtpb`` is
the API as released (a buf image without source info, text format so a refresh
reads as a diff; ``make proto-snapshot`` writes it at a release). Both checks
run offline with buf built from the Go module proxy (chaos/tools/build-buf.sh);
missing buf: skipped with the build command, failed under
``XCHAT_REQUIRE_ENVTEST=1`` (CI builds it with ``make tools``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "proto"
RELEASED = PROTO / "released"
LANGUAGE_OPTIONS = (
    "csharp_namespace",
    "go_package",
    "java_multiple_files",
    "java_outer_classname",
    "java_package",
    "objc_class_prefix",
    "php_namespace",
    "ruby_package",
    "swift_prefix",
)


def _buf() -> str:
    cached = Path(os.environ.get("XCHAT_CACHE", Path.home() / ".cache" / "xchat")) / "bin" / "buf"
    found = str(cached) if cached.exists() else shutil.which("buf")
    if found is None:
        msg = "buf not built: chaos/tools/build-buf.sh (make tools builds it)"
        if os.environ.get("XCHAT_REQUIRE_ENVTEST") == "1":
            pytest.fail(msg + " [XCHAT_REQUIRE_ENVTEST=1]")
        pytest.skip(msg)
    return found


def _version_key(path: Path) -> tuple[int, ...]:
    match = re.search(r"-(\d+(?:\.\d+)*)\.txtpb$", path.name)
    assert match, f"{path.name}: expected xchat-v1-<version>.txtpb"
    return tuple(int(part) for part in match.group(1).split("."))


def last_released() -> Path:
    snapshots = sorted(RELEASED.glob("xchat-v1-*.txtpb"), key=_version_key)
    assert snapshots, f"no released API snapshot in {RELEASED}"
    return snapshots[-1]


def _run(buf: str, *args: str, cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # A private cache: no state shared with other runs, and nothing is fetched (the module has no deps).
    env = {**os.environ, "BUF_CACHE_DIR": str(tmp_path / "buf-cache")}
    return subprocess.run([buf, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_buf_lint_is_clean(tmp_path: Path) -> None:
    result = _run(_buf(), "lint", cwd=PROTO, tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_breaking_change_against_the_last_released_api(tmp_path: Path) -> None:
    result = _run(_buf(), "breaking", "--against", str(last_released()), cwd=PROTO, tmp_path=tmp_path)
    assert result.returncode == 0, (
        f"breaking change against {last_released().name} (add, don't rename or renumber):\n" + result.stdout + result.stderr
    )


def test_a_renamed_field_is_caught_as_breaking(tmp_path: Path) -> None:
    """The check bites: renaming one field of the released API fails it, naming the field."""
    changed = tmp_path / "proto"
    shutil.copytree(PROTO, changed, ignore=shutil.ignore_patterns("released"))
    mailbox = changed / "xchat" / "v1" / "mailbox.proto"
    text = mailbox.read_text()
    assert "repeated uint64 ack_sequences = 1;" in text
    mailbox.write_text(text.replace("repeated uint64 ack_sequences = 1;", "repeated uint64 acked_sequences = 1;"))
    result = _run(_buf(), "breaking", "--against", str(last_released()), cwd=changed, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "ack_sequences" in result.stdout + result.stderr


def test_every_proto_names_its_package_for_other_languages() -> None:
    for path in sorted((PROTO / "xchat" / "v1").glob("*.proto")):
        text = path.read_text()
        missing = [o for o in LANGUAGE_OPTIONS if not re.search(rf"^option {o} = ", text, re.M)]
        assert not missing, f"{path.name} lacks {missing}"

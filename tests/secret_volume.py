"""A Secret volume as the kubelet writes it, for tests of processes that watch mounted files.

The kubelet's AtomicWriter (pkg/volume/util/atomic_writer.go) never rewrites a
file in place: each update goes into a new hidden timestamped directory, the
``..data`` symlink is swapped to it with one rename, and every visible name is
a symlink through ``..data``. A reader sees the old set or the new set of files,
never a mix, and a changed file has a new inode (its mtime may not change).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path


class SecretVolume:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._generation = 0

    def file(self, name: str) -> Path:
        return self.path / name

    def project(self, data: Mapping[str, str | bytes]) -> None:
        """Replaces the volume's contents with ``data`` (file name -> content) in one swap."""
        self._generation += 1
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.") + f"{time.monotonic_ns() % 10**9:09d}{self._generation}"
        target = self.path / stamp
        target.mkdir()
        for name, content in data.items():
            (target / name).write_bytes(content.encode() if isinstance(content, str) else content)
        data_link = self.path / "..data"
        previous = os.readlink(data_link) if data_link.is_symlink() else None
        tmp = self.path / "..data_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(stamp)
        tmp.replace(data_link)  # rename(2): the one atomic step
        for name in data:
            visible = self.path / name
            if not visible.is_symlink():
                visible.symlink_to(Path("..data") / name)
        for entry in self.path.iterdir():
            if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in data:
                entry.unlink()  # a key no longer in the Secret
        if previous is not None:
            shutil.rmtree(self.path / previous)

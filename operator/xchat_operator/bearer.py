"""The operator's bearer token: fixed, or read from a file the kubelet rotates.

In a pod the service account token is a projected, bound token: the kubelet
rewrites the file well before the token expires (an hour by default), and an
API server that does not extend old tokens refuses it after that. A client that
read the file once stops working an hour after it started. Like client-go (and
lightkube), the file is read again periodically and at once after a 401.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

RELOAD_SECONDS = 60.0  # client-go re-reads its token file once a minute


class BearerToken:
    def __init__(self, *, token: str | None = None, token_file: str | None = None,
                 reload_seconds: float = RELOAD_SECONDS) -> None:
        self._fixed = token
        self._file = Path(token_file) if token_file else None
        self._reload = reload_seconds
        self._lock = threading.Lock()  # handlers call the API from several threads
        self._value: str | None = None
        self._read_at = float("-inf")

    @property
    def rotates(self) -> bool:
        return self._file is not None

    def value(self) -> str | None:
        if self._file is None:
            return self._fixed
        with self._lock:
            if time.monotonic() - self._read_at >= self._reload:
                self._read()
            return self._value

    def refresh(self) -> None:
        """Read the file now (after the API server refused the token we had)."""
        if self._file is not None:
            with self._lock:
                self._read()

    def _read(self) -> None:
        assert self._file is not None
        try:
            self._value = self._file.read_text().strip() or None
        except OSError:
            pass  # keep the last token: a rotation in progress, or a transient mount problem
        self._read_at = time.monotonic()

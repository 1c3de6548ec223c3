"""Access-token key files: read strictly, watched while the process runs, swapped in without a restart.

The files (``xchat.core.settings``):

* ``XCHAT_TOKEN_SIGNING_KEY_FILE`` (auth): one base64 Ed25519 seed, the key
  auth signs with (and the key transparency directory, docs/adr/0014);
* ``XCHAT_TOKEN_PUBLIC_KEY_FILE`` and each of ``XCHAT_TOKEN_EXTRA_PUBLIC_KEY_FILES``:
  one or more base64 public keys, one per line (blank lines and ``#`` comment
  lines are skipped), every one accepted for tokens;
* ``XCHAT_TOKEN_RETIRED_PUBLIC_KEYS_FILE`` (auth): public keys of retired
  signing keys, never accepted for tokens; only the directory names them for
  the epoch heads they signed. It may be empty.

A process accepts exactly what its files say, plus the public half of its own
signing key: a key removed from the files is refused by the next poll.

Reload: :class:`KeyFileWatcher` reads the files every ``interval`` (a setting,
``XCHAT_TOKEN_KEY_RELOAD_S``, 5 s by default) and compares their bytes with the
last read, which notices every way a file changes: Kubernetes' atomic symlink
swap of a mounted Secret (new inode, possibly the same mtime), a rename into
place, an edit in place. Reading three files of a few hundred bytes is far
cheaper than the mtime-and-inode bookkeeping it would replace. Changed bytes
are parsed as a whole; only a complete, valid set is applied, in one step (the
signer, every verifier and the directory get the new keys before the next
call is served: they are swapped by plain assignments on the event loop). A
file that is unreadable, empty, truncated, or not base64 of 32 bytes keeps the
previous keys and logs one error line naming the file and the reason (once per
distinct bad content, not on every poll). Nothing a file holds can stop the
process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import nacl.signing

from xchat.core.tokens import key_id

log = logging.getLogger(__name__)

KEY_BYTES = 32
# A key file is a few lines (45 bytes a key); the retired list grows by one line per
# rotation. Beyond a Secret's own limit it is no key file (and is never read whole).
MAX_KEY_FILE_BYTES = 1024 * 1024


class KeyFileError(ValueError):
    """A key file cannot be read or does not hold what it must; the message names the file."""


@dataclass(frozen=True, slots=True)
class TokenKeyFiles:
    """Where the keys come from (the paths of the ``XCHAT_TOKEN_*`` variables)."""

    signing: Path | None = None
    public: Path | None = None
    extra: tuple[Path, ...] = ()
    retired: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.signing, self.public, *self.extra, self.retired) if p is not None)


@dataclass(frozen=True, slots=True)
class TokenKeys:
    """One consistent set of keys: what the process signs with, accepts, and only remembers."""

    signing_seed: bytes | None
    # Public keys accepted for tokens, the signing key's own first, without duplicates.
    accepted: tuple[bytes, ...]
    # Public keys of retired signing keys: the directory's epoch heads only, never tokens.
    retired: tuple[bytes, ...] = ()

    @property
    def signing_kid(self) -> str | None:
        if self.signing_seed is None:
            return None
        return key_id(nacl.signing.SigningKey(self.signing_seed).verify_key)

    @property
    def accepted_kids(self) -> tuple[str, ...]:
        return tuple(key_id(nacl.signing.VerifyKey(k)) for k in self.accepted)

    def describe(self) -> str:
        signing = f"signing key {self.signing_kid}, " if self.signing_seed is not None else ""
        return f"{signing}accepted keys {', '.join(self.accepted_kids)}"


def parse_keys(text: str, *, name: str, allow_empty: bool = False) -> tuple[bytes, ...]:
    """The keys of a key file's text: base64 of 32 bytes per line; ``name`` goes into errors."""
    keys: list[bytes] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KeyFileError(f"{name}: line {number} is not base64") from exc
        if len(key) != KEY_BYTES:
            raise KeyFileError(f"{name}: line {number} holds {len(key)} bytes, expected {KEY_BYTES}")
        keys.append(key)
    if not keys and not allow_empty:
        raise KeyFileError(f"{name}: holds no key (expected base64 of {KEY_BYTES} bytes)")
    return tuple(keys)


def read_key_file(path: Path, *, name: str, allow_empty: bool = False) -> tuple[bytes, ...]:
    return parse_keys(_read(path, name=name).decode("ascii", errors="replace"), name=name, allow_empty=allow_empty)


def _read(path: Path, *, name: str) -> bytes:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"{name}: cannot read {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{name}: {path} is larger than {MAX_KEY_FILE_BYTES} bytes, not a key file")
    return raw


def read_signing_seed(path: Path, *, name: str = "XCHAT_TOKEN_SIGNING_KEY_FILE") -> bytes:
    seeds = read_key_file(path, name=name)
    if len(seeds) != 1:
        raise KeyFileError(f"{name}: {path} holds {len(seeds)} keys, expected exactly one seed")
    return seeds[0]


def combine(
    signing_seed: bytes | None, files_keys: Iterable[bytes], retired: Iterable[bytes] = ()
) -> TokenKeys:
    """The accepted set: the signing key's public half first, then the files' keys, each once."""
    accepted: list[bytes] = []
    if signing_seed is not None:
        accepted.append(bytes(nacl.signing.SigningKey(signing_seed).verify_key))
    for key in files_keys:
        if key not in accepted:
            accepted.append(key)
    return TokenKeys(signing_seed=signing_seed, accepted=tuple(accepted), retired=tuple(dict.fromkeys(retired)))


def load(files: TokenKeyFiles) -> TokenKeys:
    """Every key the files name, or :class:`KeyFileError` (nothing half-read is ever returned)."""
    seed = read_signing_seed(files.signing) if files.signing is not None else None
    public: list[bytes] = []
    if files.public is not None:
        public += read_key_file(files.public, name="XCHAT_TOKEN_PUBLIC_KEY_FILE")
    for path in files.extra:
        public += read_key_file(path, name="XCHAT_TOKEN_EXTRA_PUBLIC_KEY_FILES")
    retired: tuple[bytes, ...] = ()
    if files.retired is not None:
        retired = read_key_file(files.retired, name="XCHAT_TOKEN_RETIRED_PUBLIC_KEYS_FILE", allow_empty=True)
    if seed is None and not public:
        raise KeyFileError("no token key: set XCHAT_TOKEN_SIGNING_KEY_FILE or XCHAT_TOKEN_PUBLIC_KEY_FILE")
    return combine(seed, public, retired)


def _fingerprint(files: TokenKeyFiles) -> str:
    """A digest of the files' bytes as they are now (an unreadable file counts as its error)."""
    digest = hashlib.sha256()
    for path in files.paths:
        try:
            with path.open("rb") as f:
                data = f.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            data = f"unreadable: {exc.errno}".encode()
        digest.update(str(path).encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


Apply = Callable[[TokenKeys], None]


class KeyFileWatcher:
    """Polls the key files; applies each complete, valid change once (see the module docstring)."""

    def __init__(self, files: TokenKeyFiles, current: TokenKeys, apply: Apply, *, interval_s: float) -> None:
        self._files = files
        self._apply = apply
        self._interval_s = interval_s
        self.current = current
        # Empty: the first poll reads the files once more (they may have changed since the
        # settings read them at start) and applies them only if the keys differ.
        self._seen = ""
        self._task: asyncio.Task[None] | None = None
        # Counted for tests and logs: complete sets applied, changes refused.
        self.applied = 0
        self.refused = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="xchat-token-key-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.poll()

    def poll(self) -> bool:
        """Reads the files once; True when a new set was applied."""
        seen = _fingerprint(self._files)
        if seen == self._seen:
            return False
        self._seen = seen  # a bad content is reported once, and retried only when it changes again
        try:
            keys = load(self._files)
        except KeyFileError as exc:
            self.refused += 1
            log.error("token keys not reloaded: %s; keeping %s", exc, self.current.describe())
            return False
        if keys == self.current:
            return False  # rewritten with the same keys (a Secret re-projected, a comment edited)
        try:
            self._apply(keys)
        except Exception as exc:  # noqa: BLE001 - a holder refusing the set must not end the watcher
            self.refused += 1
            log.error("token keys not reloaded: %s; keeping %s", exc, self.current.describe())
            return False
        self.current = keys
        self.applied += 1
        log.info("token keys reloaded: %s", keys.describe())
        return True

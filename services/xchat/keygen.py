"""``xchat keygen``: the access-token key pair a deployment outside ``xchat up`` needs.

auth signs access tokens with an Ed25519 seed; every service verifies them
offline with the public key (``xchat.core.tokens``). Both files hold base64 of
32 bytes, the form ``xchat.core.settings`` reads from
``XCHAT_TOKEN_SIGNING_KEY_FILE`` and ``XCHAT_TOKEN_PUBLIC_KEY_FILE``. Files
are written 0600 and never overwritten: replacing a signing key at once logs
every device out; rotate in three steps instead (the public file may list
several keys, and running services re-read both files: docs/security.md,
"Rotating the signing key without downtime").
"""

from __future__ import annotations

import base64
from pathlib import Path

import nacl.signing

from xchat.mesh.processes import write_private

SIGNING_FILE = "token-signing.key"
PUBLIC_FILE = "token-public.key"


def generate_token_keys(directory: Path) -> tuple[Path, Path]:
    """Writes a new key pair into ``directory``; returns (signing file, public file)."""
    signing, public = directory / SIGNING_FILE, directory / PUBLIC_FILE
    existing = [str(p) for p in (signing, public) if p.exists()]
    if existing:
        raise FileExistsError(f"{', '.join(existing)} already exists; refusing to replace a token key")
    key = nacl.signing.SigningKey.generate()
    write_private(signing, base64.b64encode(bytes(key)).decode() + "\n")
    write_private(public, base64.b64encode(bytes(key.verify_key)).decode() + "\n")
    return signing, public


def settings_hint(signing: Path, public: Path) -> str:
    return (
        f"XCHAT_TOKEN_SIGNING_KEY_FILE={signing}   # auth only (keep it secret)\n"
        f"XCHAT_TOKEN_PUBLIC_KEY_FILE={public}    # keys, relay, mailbox"
    )

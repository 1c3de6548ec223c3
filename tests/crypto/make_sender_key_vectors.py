"""Write tests/crypto/vectors/sender_keys.json (not collected by pytest, never run by tests).

    .venv/bin/python tests/crypto/make_sender_key_vectors.py

Run it only for a deliberate change of the sender-key wire format or KDF: the
committed file is what proves the SDK still produces the same bytes
(test_crypto_sender_keys.py recomputes every output from the inputs). Inputs
are fresh random bytes; Ed25519 and the chain are deterministic, so no
randomness seam is needed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_crypto_sender_keys import VECTOR_FILE, sender_key_outputs  # noqa: E402


def main() -> None:
    inputs = {
        "group_id": os.urandom(16).hex(),
        "key_id": int.from_bytes(os.urandom(4), "big"),
        "chain_key": os.urandom(32).hex(),
        "signing_seed": os.urandom(32).hex(),
        "sender_account": "alice",
        "sender_device": "d-7f3a",
        "plaintexts": ["first group message", "second", "third, read before the second"],
    }
    outputs = sender_key_outputs(inputs)
    assert outputs == sender_key_outputs(inputs), "sender key outputs are not deterministic"
    VECTOR_FILE.write_text(json.dumps({"inputs": inputs, "outputs": outputs}, indent=2) + "\n")
    print(f"wrote {VECTOR_FILE}")


if __name__ == "__main__":
    main()

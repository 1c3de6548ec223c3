"""An auditor's signed statement over the key transparency log (docs/key-transparency.md).

``xchat audit`` replays the log and signs what it verified: a JSON object

    statement "xchat-kt-audit-v1", regions, from_epoch, epoch, log_root (hex),
    map_root (hex), entries, verified_at_ms, auditor_key (hex Ed25519 public key),
    signature (base64) = Ed25519 over "xchat-kt-audit-v1" 0x00 || the other
    fields as sorted compact JSON

Shared by the auditor (signs), the directory (accepts statements of the
deployment's auditors only) and the SDK (requires one, when configured):
the canonical bytes are built in one place. Parsing is strict: a statement
that does not parse, or whose signature is not by the key it names, is a
``StatementError`` naming the problem.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

__all__ = ["AuditStatement", "StatementError", "sign_statement", "STATEMENT_KIND"]

STATEMENT_KIND = "xchat-kt-audit-v1"
STATEMENT_LABEL = STATEMENT_KIND.encode() + b"\x00"
# A published statement is a few hundred bytes (three regions); anything far larger is not one.
MAX_STATEMENT_BYTES = 4096


class StatementError(ValueError):
    """An audit statement that does not parse ("malformed") or verify ("signature")."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(f"audit statement {problem}: {detail}")
        self.problem = problem
        self.detail = detail


def _canonical(body: dict[str, Any]) -> bytes:
    return STATEMENT_LABEL + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class AuditStatement:
    """A parsed statement; ``verify()`` checks its signature by ``auditor_key``."""

    epoch: int
    log_root: bytes
    map_root: bytes
    verified_at_ms: int
    auditor_key: bytes
    from_epoch: int
    regions: tuple[str, ...]
    entries: int
    signature: bytes
    # Exactly the signed bytes (label and canonical JSON).
    signed: bytes

    @classmethod
    def parse(cls, raw: bytes | str) -> AuditStatement:
        """Parses JSON as ``xchat audit`` prints it (any whitespace); StatementError("malformed")."""
        if isinstance(raw, str):
            raw = raw.encode()
        if len(raw) > MAX_STATEMENT_BYTES:
            raise StatementError("malformed", f"{len(raw)} bytes is not a statement")
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("statement") != STATEMENT_KIND:
                raise ValueError(f"not an {STATEMENT_KIND} statement")
            body = {k: v for k, v in data.items() if k != "signature"}
            regions = data["regions"]
            if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
                raise ValueError("regions is not a list of names")
            numbers = {k: data[k] for k in ("epoch", "from_epoch", "entries", "verified_at_ms")}
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in numbers.values()):
                raise ValueError("epoch, from_epoch, entries and verified_at_ms must be integers >= 0")
            statement = cls(
                epoch=numbers["epoch"],
                log_root=bytes.fromhex(data["log_root"]),
                map_root=bytes.fromhex(data["map_root"]),
                verified_at_ms=numbers["verified_at_ms"],
                auditor_key=bytes.fromhex(data["auditor_key"]),
                from_epoch=numbers["from_epoch"],
                regions=tuple(regions),
                entries=numbers["entries"],
                signature=base64.b64decode(data["signature"], validate=True),
                signed=_canonical(body),
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise StatementError("malformed", str(exc)) from exc
        if len(statement.log_root) != 32 or len(statement.map_root) != 32 or len(statement.auditor_key) != 32:
            raise StatementError("malformed", "roots and the auditor key are 32 bytes")
        return statement

    def verify(self) -> AuditStatement:
        """Itself, once its signature is the named auditor key's; StatementError("signature") otherwise."""
        try:
            nacl.signing.VerifyKey(self.auditor_key).verify(self.signed, self.signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError) as exc:
            raise StatementError(
                "signature", f"epoch {self.epoch}: not signed by auditor key {self.auditor_key.hex()[:16]}"
            ) from exc
        return self


def sign_statement(
    *, regions: list[str], from_epoch: int, epoch: int, log_root: bytes, map_root: bytes, entries: int,
    auditor: nacl.signing.SigningKey, verified_at_ms: int | None = None,
) -> dict[str, object]:
    """The statement ``xchat audit`` prints: the fields above and their signature."""
    body: dict[str, Any] = {
        "statement": STATEMENT_KIND,
        "regions": list(regions),
        "from_epoch": from_epoch,
        "epoch": epoch,
        "log_root": log_root.hex(),
        "map_root": map_root.hex(),
        "entries": entries,
        "verified_at_ms": int(time.time() * 1000) if verified_at_ms is None else verified_at_ms,
        "auditor_key": bytes(auditor.verify_key).hex(),
    }
    return {**body, "signature": base64.b64encode(auditor.sign(_canonical(body)).signature).decode()}

"""Epoch heads an auditor vouches for, when the deployment asks clients to require one.

A client opened with ``auditor_keys`` (``Client.open``) accepts an epoch head
from the directory only when a statement of one of those auditors covers it
(docs/key-transparency.md). Statements reach the client with the lookup
itself: auditors hand them to the directory (``xchat audit --publish``), which
keeps the latest per auditor and sends each with the RFC 9162 consistency
proof between the statement's epoch and the head's (``LookupKey`` with
``audit_statements``; no extra round trip). Here, for every statement:

- one naming a key this client does not require is ignored (another
  deployment's, or an auditor this app does not trust);
- one naming a required key whose signature does not verify is forged:
  "audit_signature" (the directory, or whoever wrote its store, made it up);
- one whose epoch and root are not on the head's history (the same epoch with
  another root, or a proof that does not link them) means the auditor
  verified another history than the one this client is shown:
  "audit_mismatch".

The head is then accepted when a statement's epoch is the head's or later
(the auditor verified it), or **earlier but at most ``max_lag_s`` old** by
this device's clock (``verified_at_ms``): a head newer than the latest audit
is accepted up to a documented lag, never waited for, because auditors run
from cron (minutes) while the log seals every second; within the lag a fork
after the audited epoch is not yet covered (gossip between devices still
catches one shown to two of them). Otherwise "unaudited".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xchat.client.crypto.auditing import AuditStatement, StatementError
from xchat.client.crypto.merkle import ProofError, verify_consistency
from xchat.client.crypto.transparency import EpochHead

log = logging.getLogger(__name__)

# How far behind the head the latest audit may be, by this device's clock (Client.open's default):
# an auditor running hourly from cron, with room for one missed run.
DEFAULT_AUDITOR_MAX_LAG_S = 2 * 3600.0


class AuditProblem(Exception):
    """Why a head is refused: ``problem`` is "audit_signature", "audit_mismatch" or "unaudited"."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(f"{problem}: {detail}")
        self.problem = problem
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ServedStatement:
    """A statement as the directory served it, with its consistency proof to the head."""

    raw: bytes
    proof: tuple[bytes, ...]


class RequiredAuditors:
    def __init__(
        self, keys: Sequence[bytes] = (), *, max_lag_s: float = DEFAULT_AUDITOR_MAX_LAG_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for key in keys:
            if not isinstance(key, bytes) or len(key) != 32:
                raise ValueError("each auditor key is a 32-byte Ed25519 public key")
        if max_lag_s < 0:
            raise ValueError("auditor_max_lag_s must be >= 0")
        self._keys = frozenset(keys)
        self._max_lag_ms = max_lag_s * 1000
        self._clock = clock

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def check(self, head: EpochHead, served: Sequence[ServedStatement]) -> None:
        """Returns when a required auditor covers ``head`` (or none is required); AuditProblem otherwise."""
        if not self._keys:
            return
        covered = False
        notes: list[str] = []
        now_ms = self._clock() * 1000
        for item in served:
            try:
                statement = AuditStatement.parse(item.raw)
            except StatementError as exc:
                notes.append(str(exc))
                continue
            short = statement.auditor_key.hex()[:16]
            if statement.auditor_key not in self._keys:
                notes.append(f"auditor {short} is not one this client requires")
                continue
            try:
                statement.verify()
            except StatementError as exc:
                raise AuditProblem("audit_signature", f"a statement in the name of auditor {short} is forged: {exc}") from exc
            self._on_history(head, statement, item.proof, short)
            if statement.epoch >= head.epoch:
                covered = True
            elif now_ms - statement.verified_at_ms <= self._max_lag_ms:
                covered = True  # newer than the audit, within the lag
            else:
                age_s = (now_ms - statement.verified_at_ms) / 1000
                notes.append(f"auditor {short} verified epoch {statement.epoch} {age_s:.0f} s ago (more than the lag)")
        if not covered:
            why = "; ".join(notes) if notes else "the directory served no statement"
            raise AuditProblem("unaudited", f"no required auditor covers epoch {head.epoch}: {why}")

    @staticmethod
    def _on_history(head: EpochHead, statement: AuditStatement, proof: Sequence[bytes], short: str) -> None:
        """The statement's (epoch, log root) is on the head's history: equal, or linked by the proof."""
        if statement.epoch == head.epoch:
            if statement.log_root != head.log_root or statement.map_root != head.map_root:
                raise AuditProblem(
                    "audit_mismatch", f"auditor {short} verified other roots for epoch {head.epoch} than this client is shown"
                )
            return
        older, newer = sorted(
            ((statement.epoch, statement.log_root), (head.epoch, head.log_root)), key=lambda pair: pair[0]
        )
        try:
            verify_consistency(older[0] + 1, newer[0] + 1, older[1], newer[1], list(proof))
        except ProofError as exc:
            raise AuditProblem(
                "audit_mismatch",
                f"auditor {short} verified epoch {statement.epoch} on another history than epoch {head.epoch}: {exc}",
            ) from exc

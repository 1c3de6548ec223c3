"""Auditor statements (docs/key-transparency.md): one canonical form for the auditor, the directory
and the SDK; parsed strictly, verified against the key they name."""

from __future__ import annotations

import json

import nacl.signing
import pytest

from xchat.client.crypto.auditing import STATEMENT_LABEL, AuditStatement, StatementError, sign_statement


def _signed(key: nacl.signing.SigningKey, **overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "regions": ["a", "b"], "from_epoch": 0, "epoch": 12, "log_root": bytes(range(32)), "map_root": bytes(32),
        "entries": 40, "auditor": key, "verified_at_ms": 1_700_000_000_000,
    }
    fields.update(overrides)
    return sign_statement(**fields)  # type: ignore[arg-type]


def test_a_statement_verifies_however_it_is_printed() -> None:
    key = nacl.signing.SigningKey.generate()
    signed = _signed(key)
    for text in (json.dumps(signed, indent=1), json.dumps(signed, sort_keys=True, separators=(",", ":"))):
        statement = AuditStatement.parse(text).verify()
        assert (statement.epoch, statement.log_root, statement.auditor_key) == (12, bytes(range(32)), bytes(key.verify_key))
        assert statement.regions == ("a", "b") and statement.verified_at_ms == 1_700_000_000_000
    body = {k: v for k, v in signed.items() if k != "signature"}
    # The documented form: the label, then the other fields as sorted compact JSON.
    assert statement.signed == STATEMENT_LABEL + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def test_a_changed_field_or_another_key_does_not_verify() -> None:
    key, other = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    signed = _signed(key)
    for changed in ({"epoch": 13}, {"log_root": "00" * 32}, {"regions": ["a"]}, {"auditor_key": bytes(other.verify_key).hex()}):
        with pytest.raises(StatementError) as err:
            AuditStatement.parse(json.dumps({**signed, **changed})).verify()
        assert err.value.problem == "signature"


def test_malformed_statements_are_named() -> None:
    key = nacl.signing.SigningKey.generate()
    signed = _signed(key)
    for bad in (
        b"not json", b"[]", json.dumps({**signed, "statement": "other"}), json.dumps({**signed, "epoch": -1}),
        json.dumps({**signed, "epoch": True}), json.dumps({**signed, "log_root": "zz"}),
        json.dumps({**signed, "log_root": "00"}), json.dumps({**signed, "signature": "%%"}),
        json.dumps({k: v for k, v in signed.items() if k != "map_root"}), b"{" + b" " * 5000 + b"}",
    ):
        with pytest.raises(StatementError) as err:
            AuditStatement.parse(bad)
        assert err.value.problem == "malformed"

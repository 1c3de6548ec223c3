"""docs/configuration.md is generated from the settings tables (services' and operator's), and is current."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from xchat.core.settings import VARIABLES, ServiceSettings, SettingsError, from_env
from xchat_operator import settings as operator_settings
from xchat_operator import settings_doc

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "configuration.md"
# Fields that no single variable sets: files read by from_env's own code, and the
# service list, which is `xchat serve`'s positional argument.
NOT_FROM_ONE_VARIABLE = {
    "nats_password", "nats_ca", "token_signing_seed", "token_public_key", "token_extra_public_keys",
    "token_retired_public_keys", "token_key_files", "tls", "services",
}


def test_configuration_reference_is_current() -> None:
    assert DOC.read_text() == settings_doc.render(), f"docs/configuration.md is stale; regenerate: {settings_doc.REGENERATE}"


def _read_by(*paths: Path) -> set[str]:
    return {n for path in paths for n in re.findall(r"XCHAT_[A-Z_]*[A-Z]", path.read_text())}


def test_every_variable_the_code_reads_is_in_the_table() -> None:
    read = _read_by(REPO / "services" / "xchat" / "core" / "settings.py", REPO / "services" / "xchat" / "cli.py")
    read -= {"XCHAT_TLS"}  # the prefix of XCHAT_TLS_{CERT,KEY,CA}_FILE, built in a loop
    assert read - {v.name for v in VARIABLES} == set()
    operator = REPO / "operator" / "xchat_operator"
    read = _read_by(operator / "settings.py", operator / "__main__.py", operator / "handlers.py")
    read -= {"XCHAT_OPERATOR"}  # XCHAT_OPERATOR_* in prose
    assert read - {v.name for v in operator_settings.VARIABLES} == set()
    names = [v.name for v in (*VARIABLES, *operator_settings.VARIABLES)]
    assert len(set(names)) == len(names)


def test_operator_defaults_are_what_from_env_gives() -> None:
    loaded = operator_settings.from_env({})
    for var in operator_settings.VARIABLES:
        if var.field is None or var.default is None:
            continue
        value: object = loaded
        for part in var.field.split("."):
            value = getattr(value, part)
        assert value == var.default, var.name


def test_every_setting_can_be_set_from_the_environment() -> None:
    fields = {f.name for f in dataclasses.fields(ServiceSettings)}
    assert fields - NOT_FROM_ONE_VARIABLE - {v.field for v in VARIABLES} == set()
    assert {v.field for v in VARIABLES} - {None} <= fields


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    seed = tmp_path / "seed"
    seed.write_text("A" * 43 + "=")
    return {"XCHAT_REGION": "a", "XCHAT_TOKEN_SIGNING_KEY_FILE": str(seed), **extra}


def test_settings_that_were_code_only_are_read_and_validated(tmp_path: Path) -> None:
    settings = from_env(_env(
        tmp_path,
        XCHAT_ACCESS_TOKEN_LIFETIME_MS="60000",
        XCHAT_REFRESH_TOKEN_LIFETIME_S="86400",
        XCHAT_DUPLICATE_WINDOW_S="120.5",
        XCHAT_STORE_TIMEOUT_S="2",
        XCHAT_MAX_CIPHERTEXT_BYTES="65536",
    ))
    assert (settings.access_token_lifetime_ms, settings.refresh_token_lifetime_s) == (60000, 86400)
    assert (settings.duplicate_window_s, settings.store_timeout_s, settings.max_ciphertext_bytes) == (120.5, 2.0, 65536)
    with pytest.raises(SettingsError, match=r"XCHAT_STORE_TIMEOUT_S='0' must be greater than 0"):
        from_env(_env(tmp_path, XCHAT_STORE_TIMEOUT_S="0"))
    with pytest.raises(SettingsError, match=r"XCHAT_MAX_CIPHERTEXT_BYTES='1.5' is not an integer"):
        from_env(_env(tmp_path, XCHAT_MAX_CIPHERTEXT_BYTES="1.5"))
    with pytest.raises(SettingsError, match=r"XCHAT_ACCESS_TOKEN_LIFETIME_MS='-1' must be greater than 0"):
        from_env(_env(tmp_path, XCHAT_ACCESS_TOKEN_LIFETIME_MS="-1"))


def test_unset_and_empty_mean_the_default(tmp_path: Path) -> None:
    assert from_env(_env(tmp_path, XCHAT_STORE_TIMEOUT_S="")) == from_env(_env(tmp_path))


def test_every_variable_the_operator_or_chart_sets_is_documented() -> None:
    """What the operator puts in pod specs and the chart in its Deployment are product settings too."""
    sources = [*(REPO / "operator" / "xchat_operator").glob("*.py"),
               *(p for p in (REPO / "charts" / "xchat").rglob("*") if p.suffix in (".yaml", ".tpl") and "tests" not in p.parts)]
    # XCHAT_CACHE: where the test tooling keeps built binaries (envtest); XCHAT_OPERATOR: the prefix in prose.
    names = _read_by(*sources) - {"XCHAT_CACHE", "XCHAT_OPERATOR"}
    assert names - {v.name for v in (*VARIABLES, *operator_settings.VARIABLES)} == set()

"""Token key files (``xchat.core.tokenkeys``): strict parsing, and the watcher that swaps keys in while running.

In memory and on a temp directory: the same files a real mesh reads are
covered end to end by tests/services/test_services_token_rotation.py.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from tests.secret_volume import SecretVolume
from xchat.app import TokenHolders
from xchat.core.errors import Unauthenticated
from xchat.core.ids import AccountId, DeviceId
from xchat.core.settings import SettingsError, from_env
from xchat.core.tokenkeys import (
    MAX_KEY_FILE_BYTES,
    KeyFileError,
    KeyFileWatcher,
    TokenKeyFiles,
    combine,
    load,
    parse_keys,
)
from xchat.core.tokens import TokenSigner, TokenVerifier, key_id

OLD, NEW = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _token(key: nacl.signing.SigningKey) -> str:
    return TokenSigner(signing_key=key, lifetime_ms=600_000).issue(AccountId("alice"), DeviceId("f" * 32))[0]


def test_key_files_are_parsed_strictly() -> None:
    two = f"# accepted keys\n{_b64(bytes(OLD.verify_key))}\n\n  {_b64(bytes(NEW.verify_key))}  \n"
    assert parse_keys(two, name="f") == (bytes(OLD.verify_key), bytes(NEW.verify_key))
    for bad, why in (("", "holds no key"), ("# nothing\n", "holds no key"), ("not base64!\n", "line 1 is not base64"),
                     (f"{_b64(bytes(OLD.verify_key))}\n{_b64(b'short')}\n", "line 2 holds 5 bytes, expected 32"),
                     (_b64(bytes(OLD.verify_key))[:-4] + "\n", "not base64|holds")):
        with pytest.raises(KeyFileError, match=why):
            parse_keys(bad, name="f")
    assert parse_keys("", name="retired", allow_empty=True) == ()


def test_a_huge_or_missing_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_text((_b64(bytes(OLD.verify_key)) + "\n") * (MAX_KEY_FILE_BYTES // 40))
    with pytest.raises(KeyFileError, match="larger than"):
        load(TokenKeyFiles(public=big))
    with pytest.raises(KeyFileError, match="cannot read"):
        load(TokenKeyFiles(public=tmp_path / "missing"))


def test_settings_read_several_keys_per_file_and_remember_the_paths(tmp_path: Path) -> None:
    seed, public, retired = tmp_path / "seed", tmp_path / "public", tmp_path / "retired"
    seed.write_text(_b64(bytes(NEW)))
    public.write_text(f"{_b64(bytes(NEW.verify_key))}\n{_b64(bytes(OLD.verify_key))}\n")
    retired.write_text("")
    settings = from_env({"XCHAT_REGION": "a", "XCHAT_TOKEN_SIGNING_KEY_FILE": str(seed),
                         "XCHAT_TOKEN_PUBLIC_KEY_FILE": str(public), "XCHAT_TOKEN_RETIRED_PUBLIC_KEYS_FILE": str(retired),
                         "XCHAT_TOKEN_KEY_RELOAD_S": "0.5"})
    assert settings.token_public_key == bytes(NEW.verify_key)
    assert settings.token_extra_public_keys == (bytes(OLD.verify_key),)
    assert settings.token_key_files == TokenKeyFiles(signing=seed, public=public, retired=retired)
    assert settings.token_key_reload_s == 0.5
    seed.write_text(f"{_b64(bytes(NEW))}\n{_b64(bytes(OLD))}\n")
    with pytest.raises(SettingsError, match="holds 2 keys, expected exactly one seed"):
        from_env({"XCHAT_REGION": "a", "XCHAT_TOKEN_SIGNING_KEY_FILE": str(seed)})


def test_replacing_a_verifiers_keys_forgets_the_tokens_it_remembered() -> None:
    verifier = TokenVerifier(verify_key=OLD.verify_key)
    token = _token(OLD)
    verifier.verify(token)  # verified and remembered
    verifier.replace_keys([NEW.verify_key])
    with pytest.raises(Unauthenticated, match="unknown key"):
        verifier.verify(token)
    assert verifier.kids == (key_id(NEW.verify_key),)
    with pytest.raises(ValueError):
        verifier.replace_keys([])


def test_a_signer_switches_key_and_names_it() -> None:
    signer = TokenSigner(signing_key=OLD, lifetime_ms=1000)
    signer.replace_key(NEW)
    token, _ = signer.issue(AccountId("alice"), DeviceId("f" * 32))
    assert signer.kid == key_id(NEW.verify_key)
    assert TokenVerifier(verify_key=NEW.verify_key).verify(token).account == "alice"


def _watched(tmp_path: Path, data: dict[str, str]) -> tuple[SecretVolume, TokenKeyFiles, TokenHolders, KeyFileWatcher]:
    volume = SecretVolume(tmp_path / "token")
    volume.project(data)
    files = TokenKeyFiles(signing=volume.file("signing.key"), public=volume.file("public.key"))
    keys = load(files)
    signer = TokenSigner(signing_key=nacl.signing.SigningKey(keys.signing_seed or b""), lifetime_ms=60_000)
    holders = TokenHolders(TokenVerifier(verify_key=OLD.verify_key), signer)
    return volume, files, holders, KeyFileWatcher(files, keys, holders.apply, interval_s=1.0)


def test_the_watcher_applies_a_swapped_volume_once_and_refuses_garbage_once(tmp_path: Path, caplog) -> None:
    old_pub, new_pub = _b64(bytes(OLD.verify_key)), _b64(bytes(NEW.verify_key))
    volume, _, holders, watcher = _watched(tmp_path, {"signing.key": _b64(bytes(OLD)), "public.key": old_pub})
    assert not watcher.poll(), "the files as they were read at start: nothing to apply"
    volume.project({"signing.key": _b64(bytes(OLD)), "public.key": f"{old_pub}\n{new_pub}"})
    assert watcher.poll() and not watcher.poll()
    assert set(holders.verifier.kids) == {key_id(OLD.verify_key), key_id(NEW.verify_key)}
    volume.project({"signing.key": _b64(bytes(NEW)), "public.key": f"{new_pub}\n{old_pub}"})
    assert watcher.poll() and holders.signer is not None and holders.signer.kid == key_id(NEW.verify_key)

    caplog.set_level(logging.ERROR, logger="xchat.core.tokenkeys")
    for garbage in ({"signing.key": "", "public.key": new_pub},  # an emptied seed
                    {"signing.key": _b64(bytes(NEW)), "public.key": new_pub[:30]},  # a truncated key
                    {"signing.key": _b64(bytes(NEW))}):  # public.key gone
        volume.project(garbage)
        assert not watcher.poll() and not watcher.poll()
        assert set(holders.verifier.kids) == {key_id(OLD.verify_key), key_id(NEW.verify_key)}
        assert holders.signer.kid == key_id(NEW.verify_key)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and all(line.startswith("token keys not reloaded: XCHAT_TOKEN_") for line in lines)
    assert "keeping signing key" in lines[0] and watcher.refused == 3

    volume.project({"signing.key": _b64(bytes(NEW)), "public.key": new_pub})
    assert watcher.poll() and holders.verifier.kids == (key_id(NEW.verify_key),)
    with pytest.raises(Unauthenticated):
        holders.verifier.verify(_token(OLD))


def test_an_in_place_edit_is_noticed_too(tmp_path: Path) -> None:
    """Outside Kubernetes a file may be rewritten in place (same inode, maybe the same mtime)."""
    public = tmp_path / "public.key"
    public.write_text(_b64(bytes(OLD.verify_key)))
    verifier = TokenVerifier(verify_key=OLD.verify_key)
    files = TokenKeyFiles(public=public)
    watcher = KeyFileWatcher(files, load(files), TokenHolders(verifier).apply, interval_s=1.0)
    assert not watcher.poll()
    with public.open("r+") as f:
        f.write(_b64(bytes(NEW.verify_key)))
    assert watcher.poll() and verifier.kids == (key_id(NEW.verify_key),)


def test_auth_refuses_a_set_without_a_signing_key() -> None:
    holders = TokenHolders(TokenVerifier(verify_key=OLD.verify_key), TokenSigner(signing_key=OLD, lifetime_ms=1000))
    with pytest.raises(ValueError, match="signing key"):
        holders.apply(combine(None, [bytes(NEW.verify_key)]))
    assert holders.verifier.kids == (key_id(OLD.verify_key),), "nothing changed"


@given(st.text(max_size=400) | st.lists(st.binary(min_size=0, max_size=40).map(lambda b: _b64(b))).map("\n".join))
@examples(max_examples=300, deadline=None)
def test_any_text_is_keys_of_32_bytes_or_one_key_file_error(text: str) -> None:
    try:
        keys = parse_keys(text, name="f")
    except KeyFileError as exc:
        assert str(exc).startswith("f: ")
        return
    assert keys and all(len(k) == 32 for k in keys)

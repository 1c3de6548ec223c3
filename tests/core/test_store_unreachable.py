"""A process that cannot reach NATS at all ends with one clear error instead of retrying for ever."""

from __future__ import annotations

import logging

import pytest

from xchat.core import store as store_module
from xchat.core.errors import Unavailable
from xchat.core.settings import ServiceSettings
from xchat.mesh.local import free_port


async def test_unreachable_nats_fails_within_the_deadline_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(store_module, "ENSURE_DEADLINE_S", 2.0)
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    settings = ServiceSettings(region="a", nats_urls=(url,), token_public_key=b"k" * 32)
    with caplog.at_level(logging.WARNING, logger="xchat.core.store"), pytest.raises(Unavailable) as info:
        await store_module.Store.connect(settings, name="test")
    assert url in str(info.value) and "within 2s" in str(info.value)
    # About four failed attempts in two seconds; the same error is logged once.
    assert len([r for r in caplog.records if "NATS error" in r.getMessage()]) == 1

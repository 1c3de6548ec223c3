"""Typing and presence events (issue 14): what ``Client.events()`` yields for ephemeral signals.

Signals are sealed end to end like messages but never stored: they reach a
device only while it has an open Sync (``Client.messages()`` running), and
the SDK turns each one it can authenticate into one of these events
(``xchat.client._signals``). ``Client.set_typing_indicators(False)`` turns both
directions off for this device.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Typing:
    """``account``'s ``device`` started (``on``) or stopped typing to us."""

    account: str
    device: str
    on: bool


@dataclass(frozen=True, slots=True)
class Online:
    """``account``'s ``device`` announced it is online (``Client.announce_online``)."""

    account: str
    device: str


SignalEvent = Typing | Online

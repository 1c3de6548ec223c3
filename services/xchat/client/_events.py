"""Security events on their way to the app: a bounded queue behind ``Client.events()``.

The receive path reports what it refused (``SessionBook``'s ``on_event``) here
and goes on; it never waits for the app. The app reads them with
``Client.events()``, independently of ``messages()``. An app that never reads
them loses the oldest beyond ``EVENTS_MAX`` (counted in ``dropped``); each one is
also logged at WARNING where it is raised.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator

from xchat.client.groups import GroupEvent
from xchat.client.messages import ConversationEvent, SecurityEvent
from xchat.client.signals import SignalEvent

Event = SecurityEvent | GroupEvent | ConversationEvent | SignalEvent

# Unread events kept: far more than an app that reads them ever has waiting,
# and small enough that one that never reads costs nothing.
EVENTS_MAX = 1000


class EventQueue:
    def __init__(self, *, limit: int = EVENTS_MAX) -> None:
        self._events: deque[Event] = deque(maxlen=limit)
        self._wake = asyncio.Event()
        self.dropped = 0

    def put(self, event: Event) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(event)
        self._wake.set()

    async def stream(self) -> AsyncGenerator[Event, None]:
        while True:
            while not self._events:
                self._wake.clear()
                await self._wake.wait()
            yield self._events.popleft()

"""Who may consume one-time prekeys, and how fast: the budget behind FetchBundles.

A one-time prekey is a scarce resource of the *recipient*: anybody who can
fetch a bundle consumes one, and a drained device falls back to its
last-resort keys (weaker forward secrecy for the first message of a new
session). So hand-out is bounded twice (shared by the replicas like every limit): per fetching device
(one scraper) and per target account (many scrapers against one victim).

Beyond either budget a fetch is not refused: it gets a bundle *without*
one-time keys, which PQXDH accepts. Senders keep starting sessions; only the
drain stops. Fetching as such is limited per device at the edge
(``xchat.core.edge``, RESOURCE_EXHAUSTED with a retry hint).
"""

from __future__ import annotations

from xchat.core.ids import AccountId, DeviceId
from xchat.core.ratelimit import Rate, RateLimiter


class PrekeyClaims:
    def __init__(self, rate: Rate) -> None:
        self._by_caller = RateLimiter(rate, what="one-time prekey claims per fetching device")
        self._by_target = RateLimiter(rate, what="one-time prekey claims per target account")

    @property
    def limiters(self) -> dict[str, RateLimiter]:
        """Both budgets by group name, shared with the other replicas (``xchat.core.sharedlimits``)."""
        return {"prekey-claims-by-caller": self._by_caller, "prekey-claims-by-target": self._by_target}

    def allow(self, caller: DeviceId, target: AccountId, devices: int = 1) -> bool:
        """True when ``caller`` may consume one-time keys of ``devices`` devices of ``target`` now."""
        cost = float(max(1, devices))
        # The target's budget is checked first: a refused claim spends nothing of it.
        if not self._by_target.try_take(target, cost):
            return False
        return self._by_caller.try_take(caller, cost)

"""Errors of the operator, and their one mapping to kopf's retry vocabulary.

Tree::

    OperatorError                 root of everything this package raises
    ├── SpecError                 the CR cannot be turned into objects (permanent)
    ├── DependencyMissing         an object the spec names does not exist yet (retry slowly)
    └── KubeError                 an API call failed; ``status`` is the HTTP code
        └── KubeConflict          409 (retry soon)

:func:`to_kopf` is the single place that turns these into
``kopf.TemporaryError(delay=...)`` / ``kopf.PermanentError``.
"""

from __future__ import annotations

import kopf

RETRY_DELAY_SECONDS = 5.0  # API hiccups are usually gone within a few seconds


class OperatorError(Exception):
    """Root of the operator's errors."""


class SpecError(OperatorError):
    """The custom resource's spec cannot be reconciled as written."""


class DependencyMissing(OperatorError):
    """The spec refers to an object (e.g. a TLS Secret) that is not there (yet)."""


class KubeError(OperatorError):
    """A Kubernetes API call failed."""

    def __init__(self, message: str, *, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeConflict(KubeError):
    """HTTP 409: someone else wrote first."""


def to_kopf(exc: OperatorError) -> kopf.TemporaryError | kopf.PermanentError:
    """Map an operator error to kopf's retry semantics (raise the result ``from exc``)."""
    if isinstance(exc, SpecError):
        return kopf.PermanentError(str(exc))
    if isinstance(exc, DependencyMissing):
        return kopf.TemporaryError(str(exc), delay=RETRY_DELAY_SECONDS * 6)
    if isinstance(exc, KubeError) and exc.status in (400, 403, 422):
        # Our request is wrong or forbidden: retrying the same call will not help
        # until someone changes RBAC or the spec, so retry slowly.
        return kopf.TemporaryError(str(exc), delay=RETRY_DELAY_SECONDS * 6)
    return kopf.TemporaryError(str(exc), delay=RETRY_DELAY_SECONDS)

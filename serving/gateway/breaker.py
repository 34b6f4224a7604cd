"""A small circuit breaker: after a dependency fails, skip it for a while instead of paying its
timeout on every request, then let one request probe whether it is back."""

from __future__ import annotations

import time


class Breaker:
    """Closed -> open after `threshold` consecutive failures -> one probe after `cooldown_s`.

    Not thread-safe by design: the gateway uses it from its event loop only.

    Args:
        name: the dependency (for metrics and logs).
        threshold: consecutive failures that open it.
        cooldown_s: how long it stays open before a probe is let through.
    """

    def __init__(self, name: str, *, threshold: int = 3, cooldown_s: float = 1.0) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self._open_until: float | None = None

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    @property
    def skipping(self) -> bool:
        """Open and not yet due for a probe: `allow()` would say False (this does not count as one)."""
        return self._open_until is not None and time.monotonic() < self._open_until

    def allow(self) -> bool:
        """True when a call may go ahead (closed, or open and due for a probe)."""
        if self._open_until is None:
            return True
        now = time.monotonic()
        if now < self._open_until:
            return False
        self._open_until = now + self.cooldown_s  # one probe per cooldown; the rest keep skipping
        return True

    def success(self) -> None:
        self.failures = 0
        self._open_until = None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self._open_until = time.monotonic() + self.cooldown_s

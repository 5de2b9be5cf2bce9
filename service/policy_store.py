"""The policy in force, and how it is replaced.

A new policy is built completely beside the old one and then swapped in with one
reference assignment, so readers see either the old policy or the new one, never a mix.
A failed reload keeps the last good policy and remembers the error.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path

from service.errors import PolicyError, Unavailable
from service.policy import Policy, load_policy

log = logging.getLogger("support_access.policy")


class PolicyStore:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._policy: Policy | None = None
        self.last_reload_error: str | None = None
        self.last_reload_at: datetime | None = None
        self._reload_lock = threading.Lock()

    @property
    def current(self) -> Policy:
        policy = self._policy
        if policy is None:
            raise Unavailable("no policy is loaded", code="policy_unavailable")
        return policy

    @property
    def loaded(self) -> bool:
        return self._policy is not None

    def reload(self, now: datetime) -> Policy:
        """Build the policy from the directory and swap it in; raise PolicyError and keep
        the old one if the directory does not load."""
        with self._reload_lock:
            self.last_reload_at = now
            try:
                policy = load_policy(self.directory, now)
            except PolicyError as exc:
                self.last_reload_error = exc.message
                log.error("policy reload failed, keeping version %s: %s", self._version(), exc.message)
                raise
            self._policy = policy
            self.last_reload_error = None
            log.info("policy version %s loaded from %s", policy.version, self.directory)
            return policy

    def _version(self) -> str | None:
        return self._policy.version if self._policy else None

"""The policy in force, and how it is replaced.

A new policy is built completely beside the old one and then swapped in with one
reference assignment, so readers see either the old policy or the new one, never a mix.
A failed reload keeps the last good policy and remembers the error.

Each good policy is also copied to a snapshot directory. A process that starts while
the policy files are broken (a worker restarted by its server after a bad edit) serves
that last good snapshot and reports the error, instead of refusing to start; only a
first start with no good policy at all is refused.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
from datetime import datetime
from pathlib import Path

from service.errors import PolicyError, Unavailable
from service.policy import MODEL_FILES, YAML_FILES, Policy, load_policy, policy_version

log = logging.getLogger("support_access.policy")


class PolicyStore:
    def __init__(self, directory: str | Path, snapshot_dir: str | Path | None = None):
        self.directory = Path(directory)
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir else None
        self._policy: Policy | None = None
        self.last_reload_error: str | None = None
        self.last_reload_at: datetime | None = None
        self.failed_version: str | None = None  # the files' version the last reload failed on
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
                self.failed_version = self.files_version()
                if self._policy is None:  # the first load: start_from_snapshot may follow
                    log.error("policy in %s does not load: %s", self.directory, exc.message)
                else:
                    log.error("policy reload failed, keeping version %s: %s", self._version(), exc.message)
                raise
            self._policy = policy
            self.last_reload_error = None
            self.failed_version = None
            log.info("policy version %s loaded from %s", policy.version, self.directory)
            self._save_snapshot(policy)
            return policy

    def start_from_snapshot(self, now: datetime, error: PolicyError) -> bool:
        """After a failed first load: serve the last good snapshot of this directory, if
        there is one. True if a policy is now in force."""
        source = self.snapshot_dir / "SOURCE" if self.snapshot_dir else None
        if source is None or not source.is_file():
            return False
        if source.read_text(encoding="utf-8").strip() != str(self.directory.resolve()):
            return False  # a snapshot of another policy directory is no "last good" of this one
        try:
            policy = load_policy(self.snapshot_dir / "files", now)
        except PolicyError as exc:
            log.error("policy snapshot in %s does not load either: %s", self.snapshot_dir, exc.message)
            return False
        self._policy = policy
        self.last_reload_error = f"{error.message} (serving the last good policy {policy.version})"
        log.error("policy in %s does not load: %s", self.directory, self.last_reload_error)
        return True

    def _snapshot_holds(self, version: str) -> bool:
        """Already saved (every worker loads the same files: save them once)."""
        try:
            source = (self.snapshot_dir / "SOURCE").read_text(encoding="utf-8").strip()
            saved = (self.snapshot_dir / "VERSION").read_text(encoding="utf-8").strip()
        except OSError:
            return False
        return source == str(self.directory.resolve()) and saved == version

    def _save_snapshot(self, policy: Policy) -> None:
        if self.snapshot_dir is None or self._snapshot_holds(policy.version):
            return
        try:
            self.snapshot_dir.parent.mkdir(parents=True, exist_ok=True)
            # One process at a time: workers that load the same new files save together,
            # and one's rmtree of the snapshot failed under the other's os.replace.
            with open(self.snapshot_dir.with_name(f"{self.snapshot_dir.name}.lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not self._snapshot_holds(policy.version):  # the other one saved it meanwhile
                    self._save_snapshot_now(policy)
        except OSError as exc:  # a snapshot is a convenience; never fail a reload for it
            log.warning("could not save the policy snapshot in %s: %s", self.snapshot_dir, exc)

    def _save_snapshot_now(self, policy: Policy) -> None:
        """Copy the files in force beside the snapshot, then put the copy in its place."""
        staging = self.snapshot_dir.with_name(f"{self.snapshot_dir.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "files").mkdir(parents=True)
        for name in (*YAML_FILES, *MODEL_FILES):
            shutil.copyfile(policy.directory / name, staging / "files" / name)
        if policy_version(staging / "files") != policy.version:
            # A file was replaced since it was loaded: these copies are not what is in
            # force, and may not load at all. The next load saves its own.
            shutil.rmtree(staging, ignore_errors=True)
            return
        (staging / "SOURCE").write_text(str(self.directory.resolve()), encoding="utf-8")
        (staging / "VERSION").write_text(policy.version, encoding="utf-8")
        shutil.rmtree(self.snapshot_dir, ignore_errors=True)
        os.replace(staging, self.snapshot_dir)

    def _version(self) -> str | None:
        return self._policy.version if self._policy else None

    def files_version(self) -> str | None:
        """The version the files in the directory have now; None if they cannot be read."""
        try:
            return policy_version(self.directory)
        except PolicyError as exc:
            # A file that cannot be hashed (unreadable, a FIFO, too large) is a version of
            # its own: the watcher then tries it once and reports why it does not load.
            return f"unreadable: {exc.message}"
        except OSError as exc:
            log.error("cannot read policy directory %s: %s", self.directory, exc)
            return None

    def state(self) -> tuple[str | None, str | None]:
        """(the version in force, the version the last reload failed on): what another
        worker needs to hear of when it changes (service/policy_reload.py)."""
        return self._version(), self.failed_version

    def should_follow(self) -> bool:
        """Whether this worker should load the files now (another worker's news, a watch
        tick): not if they failed here already, nor if they are what is in force and no
        error is standing."""
        version = self.files_version()
        if version is None or version == self.failed_version:
            return False
        return version != self._version() or self.last_reload_error is not None

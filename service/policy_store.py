"""The policy in force, and how it is replaced.

A new policy is built completely beside the old one and then swapped in with one
reference assignment, so readers see either the old policy or the new one, never a mix.
A failed reload keeps the last good policy and remembers the error.

Each good policy is also saved, as the bytes it was loaded from, to a snapshot directory
shared by the workers of a machine: the machine's last good policy. One process loads
and saves at a time, so a snapshot saved after a worker's load is of newer files. A
process that starts while the policy files are broken (a worker restarted by its server
after a bad edit) serves it and reports the error, instead of refusing to start; only a
first start with no good policy at all is refused. And a worker that hears another
worker loaded a policy serves that snapshot (follow_snapshot) before it reads the files
itself: were they broken since, it would keep an older policy that may allow more.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from service.errors import PolicyError, Unavailable
from service.policy import Policy, load_policy, policy_version

log = logging.getLogger("support_access.policy")


class PolicyStore:
    def __init__(self, directory: str | Path, snapshot_dir: str | Path | None = None):
        self.directory = Path(directory)
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir else None
        self._policy: Policy | None = None
        self.last_reload_error: str | None = None
        self.last_reload_at: datetime | None = None
        self.failed_version: str | None = None  # the files' version the last reload failed on
        self._failure: str | None = None  # that failure's message, as the files gave it
        # The id of the snapshot as it was when this store last loaded the files or
        # followed a snapshot (None: there was none). Loads and saves take turns (reload),
        # so a snapshot with another id was saved since, of files read since.
        self._snapshot_seen: str | None = None
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

    def reload(self, now: datetime, announce: Callable[[], None] | None = None) -> Policy:
        """Build the policy from the directory and swap it in; raise PolicyError and keep
        the old one if the directory does not load. One process of the machine at a time
        loads and saves (the snapshot's lock): a snapshot saved after this load is then of
        files read after it. Saved late, a load of older files would otherwise replace a
        newer snapshot, and the other workers would follow it back. `announce` runs once a
        new version is saved and before it is swapped in: this worker's other threads
        answer under it from then on, and no other worker may answer under an older one
        after they have."""
        with self._reload_lock, self._snapshot_lock(fcntl.LOCK_EX):
            self.last_reload_at = now
            try:
                policy = load_policy(self.directory, now)
            except PolicyError as exc:
                self.last_reload_error = self._failure = exc.message
                self.failed_version = self.files_version()
                if self._policy is None:  # the first load: start_from_snapshot may follow
                    log.error("policy in %s does not load: %s", self.directory, exc.message)
                else:
                    log.error("policy reload failed, keeping version %s: %s", self._version(), exc.message)
                raise
            saved = self._save_snapshot(policy)
            # Also when this worker's version does not change: the snapshot did (another
            # worker had saved a newer one, whose files were then reverted), and the
            # workers serving that newer one must follow it back.
            if announce is not None and (saved or policy.version != self._version()):
                announce()
            self._policy = policy
            self.last_reload_error = self._failure = self.failed_version = None
            log.info("policy version %s loaded from %s", policy.version, self.directory)
            return policy

    def start_from_snapshot(self, now: datetime, error: PolicyError) -> bool:
        """After a failed first load: serve the last good snapshot of this directory, if
        there is one. True if a policy is now in force."""
        with self._reload_lock:
            policy = self._load_snapshot(now, any_seen=True)
            if policy is None:
                return False
            self._policy, self._failure = policy, error.message
            self.last_reload_error = f"{error.message} (serving the last good policy {policy.version})"
            log.error("policy in %s does not load: %s", self.directory, self.last_reload_error)
            return True

    def follow_snapshot(self, now: datetime) -> bool:
        """Serve the snapshot if another worker saved one since this store's policy was
        loaded: the policy that worker put in force (and told the others of) even if the
        files have been broken since. True if this store's policy changed."""
        with self._reload_lock:
            if self._policy is None:
                return False
            policy = self._load_snapshot(now, served=self._policy.version)
            if policy is None:
                return False
            previous, self._policy = self._policy.version, policy
            if self.files_version() == policy.version:  # the files that worker loaded: no error
                self.last_reload_error = self._failure = self.failed_version = None
            elif self._failure is not None:  # the files still fail here
                self.last_reload_error = f"{self._failure} (serving the last good policy {policy.version})"
            log.info("policy version %s (was %s) from %s", policy.version, previous, self.snapshot_dir)
            return True

    def _load_snapshot(self, now: datetime, served: str | None = None, any_seen=False) -> Policy | None:
        """The snapshot of this directory's policy, unless it was seen already (any_seen:
        even then) or its version is `served` already."""
        if self.snapshot_dir is None:
            return None
        try:
            with self._snapshot_lock(fcntl.LOCK_SH):
                saved = self._saved()
                if saved is None or (saved[1] == self._snapshot_seen and not any_seen):
                    return None
                if saved[0] == served:
                    self._snapshot_seen = saved[1]
                    return None
                policy = load_policy(self.snapshot_dir / "files", now)
        except OSError as exc:
            log.error("cannot read the policy snapshot in %s: %s", self.snapshot_dir, exc)
            return None
        except PolicyError as exc:
            log.error("policy snapshot in %s does not load: %s", self.snapshot_dir, exc.message)
            return None
        if policy.version != saved[0]:
            log.error("policy snapshot in %s is not the version it names", self.snapshot_dir)
            return None
        self._snapshot_seen = saved[1]
        return policy

    def _saved(self) -> tuple[str, str] | None:
        """The snapshot's (version, id), if it is one of this directory."""
        try:
            source = (self.snapshot_dir / "SOURCE").read_bytes()
            version = (self.snapshot_dir / "VERSION").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if source != self._source():
            return None  # a snapshot of another policy directory is no "last good" of this one
        try:
            return version, (self.snapshot_dir / "ID").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return version, ""  # saved before snapshots had ids

    @contextmanager
    def _snapshot_lock(self, kind: int):
        """The machine's lock on the snapshot: workers that load the same new files save
        together, and one's rmtree of the snapshot failed under the other's os.replace; a
        reader must not see half of one. Without one (no snapshot, a folder that cannot be
        written, a file system without locks) the policy is still loaded: there is then
        nothing shared to order."""
        if self.snapshot_dir is None:
            yield
            return
        try:
            self.snapshot_dir.parent.mkdir(parents=True, exist_ok=True)
            lock = open(self.snapshot_dir.with_name(f"{self.snapshot_dir.name}.lock"), "a")
        except OSError as exc:
            log.warning("cannot lock the policy snapshot in %s: %s", self.snapshot_dir, exc)
            yield
            return
        with lock:
            try:
                fcntl.flock(lock, kind)
            except OSError as exc:  # e.g. a file system without locks (ENOLCK)
                log.warning("cannot lock the policy snapshot in %s: %s", self.snapshot_dir, exc)
            yield

    def _save_snapshot(self, policy: Policy) -> bool:
        """Under the snapshot's lock (reload holds it): the snapshot there now is of files
        read before this load, so it is seen, whether or not this one can be saved. True
        if a snapshot of another version was replaced by this one."""
        if self.snapshot_dir is None:
            return False
        try:
            saved = self._saved()
            self._snapshot_seen = saved[1] if saved else None
            if saved is not None and saved[0] == policy.version:  # every worker loads the same files
                return False
            snapshot_id = uuid.uuid4().hex
            self._save_snapshot_now(policy, snapshot_id)
            self._snapshot_seen = snapshot_id
            return True
        except OSError as exc:  # a snapshot is a convenience; never fail a reload for it
            log.warning("could not save the policy snapshot in %s: %s", self.snapshot_dir, exc)
            return False

    def _save_snapshot_now(self, policy: Policy, snapshot_id: str) -> None:
        """Write the bytes the policy was loaded from beside the snapshot, then put them
        in its place."""
        staging = self.snapshot_dir.with_name(f"{self.snapshot_dir.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "files").mkdir(parents=True)
        for name, data in policy.files.items():
            (staging / "files" / name).write_bytes(data)
        (staging / "SOURCE").write_bytes(self._source())
        (staging / "VERSION").write_text(policy.version, encoding="utf-8")
        (staging / "ID").write_text(snapshot_id, encoding="utf-8")
        shutil.rmtree(self.snapshot_dir, ignore_errors=True)
        os.replace(staging, self.snapshot_dir)

    def _source(self) -> bytes:
        """The policy directory as the snapshot names it: its path's bytes (a path need
        not be UTF-8)."""
        return os.fsencode(self.directory.resolve())

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

"""Hot reload of the policy: on SIGHUP, when the policy files change, and on
`POST /v1/policy/reload`. Each attempt is logged, counted and audited (`policy.reloaded`).

Each worker process holds its own policy. A worker whose policy state changes (it loads
a new version, or fails on new files, or loads after a failure) moves the machine's
policy generation on (service/state_signal.py), and every other worker, before its next
answer, loads the files too unless it serves them already or failed on them already
(PolicyStore.should_follow): a reload answered by one worker is in force in all of them,
as a revocation is, and a failed one is reported by all of them. A worker hearing of a
load first serves what that worker loaded, from the snapshot it saved
(PolicyStore.follow_snapshot): the files may have been broken since, and a failed load
of them here would keep an older policy, one that may allow more."""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading

from flask import Flask
from prometheus_client import Counter

from models import transaction
from service import audit
from service.directory import provider_tenant
from service.errors import PolicyError
from service.policy import Policy

log = logging.getLogger("support_access.policy")
RELOADS = Counter("support_access_policy_reloads", "Policy reload attempts", ["result", "trigger"])


def reload_policy(app: Flask, trigger: str, actor="system") -> Policy:
    """Build the policy anew and swap it in; on failure keep the old one, record the
    error and raise PolicyError. Either way, when this worker's policy state changed,
    the other workers hear of it (see the module)."""
    store = app.extensions["policy_store"]
    now = app.config["CLOCK"]()
    previous = store.current.version if store.loaded else None
    before = store.state()
    generation = app.extensions.get("policy_generation")
    announced = []

    def announce() -> None:
        generation.publish()
        announced.append(True)

    error = None
    try:
        policy = store.reload(now, announce=announce if generation is not None else None)
    except PolicyError as exc:
        error = exc
    if generation is not None and store.state() != before and not announced:
        # A failure, or its end on the same version: the others report or clear it.
        # Before the audit record, whose failure (a database locked or down) must not
        # keep them from hearing.
        generation.publish()
    details = {"trigger": trigger, "previous_version": previous}
    details.update({"error": error.message} if error else {"version": policy.version})
    _record(app, actor, details, now, "failure" if error else "success")
    if error:
        raise error
    return policy


def follow_snapshot(app: Flask) -> None:
    """Serve the policy another worker loaded and saved since this worker's was loaded
    (PolicyStore.follow_snapshot), recorded as a reload from the snapshot."""
    store = app.extensions["policy_store"]
    now = app.config["CLOCK"]()
    previous = store.current.version
    if store.follow_snapshot(now):
        details = {"trigger": "worker", "previous_version": previous, "version": store.current.version}
        _record(app, "system", {**details, "source": "snapshot"}, now, "success")


def _record(app: Flask, actor: str, details: dict, now, result: str) -> None:
    """Said as SPEC §3 asks: the log (the store), a metric and the audit log."""
    store = app.extensions["policy_store"]
    RELOADS.labels(result=result, trigger=details["trigger"]).inc()
    with app.app_context(), transaction():
        provider = provider_tenant(app.config["PROVIDER_TENANT"])
        audit.record(
            "policy.reloaded", actor, provider, [provider], str(store.directory), details, now, result
        )


class PolicyWatcher:
    """A daemon thread that reloads on SIGHUP or when the files' content hash changes.

    The signal handler only queues a wake-up: the reload itself (files, database) runs on
    this thread, never inside a signal handler that may have interrupted a transaction.
    """

    def __init__(self, app: Flask, interval: float, generation, followed: int | None = None):
        self.app = app
        self.interval = interval
        self.generation = generation  # the machine's policy generation (see the module)
        # Not a threading.Event: a second SIGHUP arriving while the first one's handler
        # held the Event's lock would wait for that lock in the same thread, for ever.
        # SimpleQueue.put may interrupt itself.
        self.wakeups: queue.SimpleQueue = queue.SimpleQueue()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="policy-watcher", daemon=True)
        # The generation this worker's policy is current with (read before its load).
        self._followed = generation.value() if followed is None else followed
        self._start_lock = threading.Lock()
        self._follow_lock = threading.Lock()

    def install_signal_handler(self) -> PolicyWatcher:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, lambda *_: self.trigger())
        return self

    def start_once(self) -> None:
        """Before each request: the watching thread, started with the first one. Then
        too the other workers hear of this one's policy, as of a reload, before its first
        answer: a worker restarted alone loaded the files as they are now (or the last
        good snapshot), which the others may not serve yet. Once per worker: the others
        find nothing to do if they serve it already."""
        if not self.thread.is_alive() and not self.stopped.is_set():
            with self._start_lock:
                if not self.thread.ident:
                    self.generation.publish()
                    self.thread.start()

    def trigger(self) -> None:
        self.wakeups.put(True)

    def stop(self) -> None:
        self.stopped.set()
        self.wakeups.put(True)

    def _run(self) -> None:
        while not self.stopped.is_set():
            signalled = self._wait()
            if self.stopped.is_set():
                return
            self._check("sighup" if signalled else "watch", force=signalled)

    def _wait(self) -> bool:
        """Until a wake-up (True) or the end of the interval (False). Wake-ups that came
        meanwhile are one reload."""
        try:
            self.wakeups.get(timeout=self.interval if self.interval > 0 else None)
        except queue.Empty:
            return False
        with contextlib.suppress(queue.Empty):
            while True:
                self.wakeups.get_nowait()
        return True

    def keep_current(self) -> None:
        """Before each request: if another worker's policy state changed since (see the
        module), serve the policy it saved if it loaded one (the files may be broken
        since), then load the files here too unless this worker serves them already or
        failed on them already. Nothing changed: one read of a shared word."""
        if self.generation.value() == self._followed:
            return
        with self._follow_lock:
            generation = self.generation.value()  # before reading the files: none is missed
            if generation == self._followed:
                return
            try:
                follow_snapshot(self.app)
            except Exception:  # as _reload: the files are tried next, the old policy stays
                log.exception("following another worker's policy failed unexpectedly")
            if self.app.extensions["policy_store"].should_follow():
                self._reload("worker")
            # Only now: another request thread of this worker must wait for the load (on
            # the lock), not pass the check above while it runs.
            self._followed = generation

    def _check(self, trigger: str, force: bool) -> None:
        # Not files this worker serves already (loaded through the API or from another
        # worker, say), nor files it failed on: a bad version is tried once, not each tick.
        if force or self.app.extensions["policy_store"].should_follow():
            self._reload(trigger)

    def _reload(self, trigger: str) -> None:
        try:
            reload_policy(self.app, trigger)
        except PolicyError:
            pass  # recorded by reload_policy; the last good policy stays in force
        except Exception:  # the watcher must survive anything, e.g. a store outage
            log.exception("policy reload failed unexpectedly")

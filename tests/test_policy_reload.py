"""Issue 3, point 5: safe hot reload. On POST /v1/policy/reload, on a change of the policy
files (watch) and on SIGHUP the service builds the new policy beside the old one and
switches atomically; a reload that fails keeps the last good policy in force and shows
the error in GET /v1/policy, the log and the audit log.

The app's POLICY_DIR is a copy of policies/ under tmp_path (the `policy_dir` fixture below
overrides the one in tests/conftest.py), so the tests can change and break it."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service import create_app
from service import policy as policy_module
from service.errors import ConfigError, PolicyError
from service.policy import REPO_POLICY_DIR, load_policy, policy_version
from service.policy_reload import PolicyWatcher, reload_policy
from service.policy_store import PolicyStore
from service.state_signal import ProcessCounter
from tests.conftest import START, Api, read_check
from tests.helpers import copy_policies, edit

OPERATOR = "ops"
CLIENT = "diag-tool"
RELOAD = "/v1/policy/reload"
BIN = Path(sys.executable).parent
BROKEN_ACCESS = "allowed_actions: [read\ncategories: oops\n"  # invalid YAML


@pytest.fixture
def policy_dir(tmp_path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO_POLICY_DIR, target)
    return target


@pytest.fixture
def store(app):
    return app.extensions["policy_store"]


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def shown(api: Api) -> dict:
    answer = api.get("/v1/policy", OPERATOR)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def reload_events(api: Api) -> list[dict]:
    answer = api.get("/v1/audit-events?tenant_id=provider&activity=policy.reloaded", OPERATOR)
    assert answer.status_code == 200, answer.get_json()
    return [event for event in answer.get_json()["items"] if event["activity"] == "policy.reloaded"]


def last_event(api: Api, trigger: str) -> dict:
    """The newest policy.reloaded event of `trigger`, waiting for it: the watcher thread
    writes it just after it swaps the policy in."""
    found: list[dict] = []

    def present() -> bool:
        found[:] = [event for event in reload_events(api) if event["details"]["trigger"] == trigger]
        return bool(found)

    assert wait_for(present), f"no policy.reloaded event with trigger {trigger!r}"
    return found[-1]


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# --- POST /v1/policy/reload -------------------------------------------------------


def test_get_policy_shows_the_version_in_force(api, policy_dir):
    body = shown(api)
    assert body["version"] == policy_version(policy_dir)
    assert body["last_reload_error"] is None
    assert body["loaded_at"].endswith("Z")


def test_reload_of_a_good_change_switches_to_the_new_version(api, policy_dir, store):
    old = shown(api)["version"]
    edit(policy_dir / "workflow.yaml", "pending_ttl: 24h", "pending_ttl: 12h")
    answer = api.post(RELOAD, OPERATOR)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["version"] == policy_version(policy_dir) != old
    assert body["last_reload_error"] is None
    assert shown(api)["version"] == body["version"]
    assert store.current.timing.pending_ttl.total_seconds() == 12 * 3600

    events = reload_events(api)
    assert events[-1]["result"] == "success"
    assert events[-1]["actor"] == OPERATOR
    assert events[-1]["details"]["version"] == body["version"]
    assert events[-1]["details"]["previous_version"] == old
    assert events[-1]["details"]["trigger"] == "api"


def test_new_decisions_are_stamped_and_decided_by_the_reloaded_policy(api, policy_dir, approved_request):
    before = api.post("/v1/decisions", CLIENT, read_check()).get_json()
    assert (before["allowed"], before["reason"]) == (True, "granted")
    edit(policy_dir / "access.yaml", "  - signInLogs\n", "")
    new_version = api.post(RELOAD, OPERATOR).get_json()["version"]
    after = api.post("/v1/decisions", CLIENT, read_check()).get_json()
    assert (after["allowed"], after["reason"]) == (False, "category_not_allowed")
    assert before["policy_version"] != after["policy_version"] == new_version


def test_an_approval_stops_counting_when_a_reload_takes_the_approving_action_from_its_role(
    app, api, policy_dir, access_request
):
    """SPEC §3: role checks are made again; an approval counts only while its approver's
    role carries the approving action, and the policy can take it away as the directory
    can. It stays void when the action comes back: contoso must approve again."""
    from tests.test_admin_page import Browser

    roles = policy_dir / "roles.yaml"
    user_admin = "template_id: fe930be7-5e62-47db-91af-98c3a49a38b1\n    scope: customer\n    actions:\n"
    approving = user_admin + "      - microsoft.azure.supportTickets/allEntities/allTasks\n"
    not_approving = user_admin + "      - microsoft.directory/users/allProperties/read\n"
    approvals = f"/v1/access-requests/{access_request['id']}/approve"
    assert api.post(approvals, "dana", {"tenant_id": "contoso"}).status_code == 200  # User Administrator
    edit(roles, approving, not_approving)
    assert api.post(RELOAD, OPERATOR).status_code == 200

    assert api.get(f"/v1/access-requests/{access_request['id']}", "alice").get_json()["approvals"] == []
    assert "Approve for contoso" in Browser(app, "alice", "contoso").page()
    answer = api.post(approvals, "bob", {"tenant_id": "fabrikam"})
    assert answer.get_json()["status"] == "pending", answer.get_json()
    lapsed = api.get("/v1/audit-events?tenant_id=contoso&activity=access_request.approval_lapsed", "alice")
    assert [event["details"]["approver"] for event in lapsed.get_json()["items"]] == ["dana"]

    edit(roles, not_approving, approving)
    assert api.post(RELOAD, OPERATOR).status_code == 200
    answer = api.post(approvals, "alice", {"tenant_id": "contoso"})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "approved"


def test_a_reload_that_takes_the_data_reading_action_from_the_engineer_role_denies_at_once(
    api, policy_dir, approved_request
):
    """SPEC §3: roles are evaluated at decision time, so an approved grant does not
    outlive its engineer's read_diagnostics permission in the policy. (Some role must
    still carry the action for the policy to load: here the Decision Client role.)"""
    assert api.post("/v1/decisions", CLIENT, read_check()).get_json()["allowed"] is True
    roles = policy_dir / "roles.yaml"
    edit(roles, "      - supportAccess/diagnostics/read\n", "")
    evaluate = "      - supportAccess/decisions/evaluate\n"
    edit(roles, evaluate, evaluate + "      - supportAccess/diagnostics/read\n")
    assert api.post(RELOAD, OPERATOR).status_code == 200

    body = api.post("/v1/decisions", CLIENT, read_check()).get_json()

    assert (body["allowed"], body["reason"]) == (False, "not_support_engineer")


def test_a_broken_file_keeps_the_last_good_policy_and_says_why(api, policy_dir, store, caplog):
    good = shown(api)["version"]
    good_policy = store.current
    write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)

    with caplog.at_level("ERROR", logger="support_access.policy"):
        answer = api.post(RELOAD, OPERATOR)
    assert answer.status_code == 409, answer.get_json()
    error = answer.get_json()["error"]
    assert error["code"] == "policy_invalid"
    assert "access.yaml" in error["message"]

    body = shown(api)
    assert body["version"] == good
    assert "access.yaml" in body["last_reload_error"]
    assert store.current is good_policy  # the old policy object, untouched
    # the log says so, naming the file and the version kept
    assert any("access.yaml" in r.getMessage() and good in r.getMessage() for r in caplog.records)

    # the provider tenant's audit view has the failed attempt
    failed = [event for event in reload_events(api) if event["result"] == "failure"]
    assert len(failed) == 1
    assert failed[0]["actor"] == OPERATOR
    assert "access.yaml" in failed[0]["details"]["error"]
    assert failed[0]["details"]["previous_version"] == good

    # the metric counts it
    metrics = api.client.get("/metrics").get_data(as_text=True)
    assert 'support_access_policy_reloads_total{result="failure",trigger="api"}' in metrics


def test_decisions_still_work_while_the_files_are_broken(api, policy_dir, approved_request):
    good = shown(api)["version"]
    write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)
    assert api.post(RELOAD, OPERATOR).status_code == 409
    answer = api.post("/v1/decisions", CLIENT, read_check())
    assert answer.status_code == 200
    assert answer.get_json()["allowed"] is True
    assert answer.get_json()["policy_version"] == good


def test_fixing_the_file_and_reloading_clears_the_error(api, policy_dir):
    original = (policy_dir / "workflow.yaml").read_text(encoding="utf-8")
    edit(policy_dir / "workflow.yaml", "pending_ttl: 24h", "pending_ttl: a day")
    assert api.post(RELOAD, OPERATOR).status_code == 409
    assert "workflow.yaml: timing.pending_ttl" in shown(api)["last_reload_error"]

    write_atomically(policy_dir / "workflow.yaml", original.replace("pending_ttl: 24h", "pending_ttl: 20h"))
    answer = api.post(RELOAD, OPERATOR)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["last_reload_error"] is None
    assert shown(api)["last_reload_error"] is None
    assert shown(api)["version"] == policy_version(policy_dir)
    assert [event["result"] for event in reload_events(api)][-2:] == ["failure", "success"]


def test_a_file_that_is_not_utf8_is_a_failed_reload_not_a_crash(api, policy_dir):
    good = shown(api)["version"]
    path = policy_dir / "access.yaml"
    path.write_bytes(path.read_bytes() + "# caf\u00e9\n".encode("latin-1"))
    answer = api.post(RELOAD, OPERATOR)
    assert answer.status_code == 409, answer.get_json()
    body = shown(api)
    assert body["version"] == good
    assert "access.yaml" in (body["last_reload_error"] or "")


def test_a_load_that_fails_unforeseen_is_a_failed_reload_not_a_500(api, policy_dir, monkeypatch):
    """Whatever breaks while loading, the reload is reported as failed (409, the error
    shown, the last good policy kept), as a validation error would be."""
    good = shown(api)["version"]
    edit(policy_dir / "access.yaml", "categories:", "categories:  # changed")

    def broken(document):
        raise KeyError("scope")

    monkeypatch.setattr(policy_module, "_build_roles", broken)
    answer = api.post(RELOAD, OPERATOR)
    assert answer.status_code == 409, answer.get_json()
    body = shown(api)
    assert body["version"] == good
    assert "the policy does not load: KeyError('scope')" in body["last_reload_error"]
    assert [event["result"] for event in reload_events(api)][-1:] == ["failure"]


@pytest.mark.parametrize("who", ["alice", "eve", CLIENT])
def test_only_operators_see_or_reload_the_policy(api, policy_dir, who):
    before = shown(api)["version"]
    edit(policy_dir / "workflow.yaml", "pending_ttl: 24h", "pending_ttl: 12h")
    answer = api.post(RELOAD, who)
    assert answer.status_code == 403, answer.get_json()
    assert api.get("/v1/policy", who).status_code == 403
    assert shown(api)["version"] == before  # nothing was reloaded
    assert reload_events(api) == []


def test_reload_needs_a_token(api):
    assert api.post(RELOAD, None).status_code == 401


# --- the watcher: file changes and SIGHUP ---------------------------------------------


@pytest.fixture
def generation(app):
    """The machine's policy generation, as a served app has it (TESTING apps have none)."""
    app.extensions["policy_generation"] = counter = ProcessCounter()
    return counter


@pytest.fixture
def watcher(app, generation):
    watcher = PolicyWatcher(app, interval=0.05, generation=generation)
    yield watcher
    watcher.stop()
    if watcher.thread.ident:
        watcher.thread.join(timeout=5)
        assert not watcher.thread.is_alive()


def test_watcher_reloads_when_a_file_changes(api, policy_dir, store, watcher):
    old = store.current.version
    watcher.start_once()
    watcher.start_once()  # idempotent
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")
    assert wait_for(lambda: store.current.version != old), "the watcher did not reload"
    assert store.current.version == policy_version(policy_dir)
    assert store.current.timing.max_grant_duration.total_seconds() == 4 * 3600
    assert last_event(api, "watch")["result"] == "success"


def test_watcher_keeps_the_good_policy_when_a_change_is_broken(api, policy_dir, store, watcher, monkeypatch):
    good = store.current.version
    original = (policy_dir / "access.yaml").read_text(encoding="utf-8")
    ticks = []
    check = watcher._check
    monkeypatch.setattr(watcher, "_check", lambda *args, **kwargs: (check(*args, **kwargs), ticks.append(1)))
    watcher.start_once()
    write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)
    assert wait_for(lambda: store.last_reload_error is not None), "the watcher did not try the change"
    assert "access.yaml" in store.last_reload_error
    assert store.current.version == good
    assert last_event(api, "watch")["result"] == "failure"
    tried_at = len(ticks)
    # several ticks more: the same bad content is tried once, not on every tick
    assert wait_for(lambda: len(ticks) >= tried_at + 5), "the watcher stopped ticking"
    failures = [event for event in reload_events(api) if event["result"] == "failure"]
    assert len(failures) == 1 and failures[0]["details"]["trigger"] == "watch"

    write_atomically(policy_dir / "access.yaml", original)  # back to the good files
    assert wait_for(lambda: store.last_reload_error is None), "the fix was not picked up"
    assert store.current.version == good


def test_a_fifo_put_in_the_policy_folder_is_reported_and_the_watcher_goes_on(api, policy_dir, store, watcher):
    """A FIFO blocked the watcher's thread for good: no later change was picked up, and
    GET /v1/policy showed no error while the files on disk were not those in force."""
    good = store.current.version
    watcher.start_once()
    original = (policy_dir / "access.conf").read_bytes()
    (policy_dir / "access.conf").unlink()
    os.mkfifo(policy_dir / "access.conf")
    assert wait_for(lambda: store.last_reload_error is not None), "the watcher did not report it"
    assert shown(api)["last_reload_error"] == "access.conf: not a regular file (a device, FIFO or socket)"
    assert shown(api)["version"] == good

    (policy_dir / "access.conf").unlink()
    (policy_dir / "access.conf").write_bytes(original)
    assert wait_for(lambda: store.last_reload_error is None), "the watcher stopped"
    assert store.current.version == good
    assert watcher.thread.is_alive()


def test_the_watcher_does_not_load_again_what_the_api_loaded(api, policy_dir, store, watcher, monkeypatch):
    ticks = []
    check = watcher._check
    monkeypatch.setattr(watcher, "_check", lambda *args, **kwargs: (check(*args, **kwargs), ticks.append(1)))
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")
    assert api.post(RELOAD, OPERATOR).status_code == 200
    loaded = store.current
    watcher.start_once()
    assert wait_for(lambda: len(ticks) >= 5), "the watcher stopped ticking"
    assert store.current is loaded
    assert [event["details"]["trigger"] for event in reload_events(api)] == ["api"]


def test_trigger_forces_a_reload_of_unchanged_files(api, store, watcher):
    """trigger() is what the SIGHUP handler calls."""
    before = store.current
    watcher.start_once()
    watcher.trigger()
    assert wait_for(lambda: store.current is not before), "trigger() did not reload"
    assert store.current.version == before.version
    event = last_event(api, "sighup")
    assert event["result"] == "success"
    assert event["details"]["version"] == event["details"]["previous_version"] == before.version


# --- several workers: each follows the others' new policy ----------------------------------


def test_a_reload_that_changes_the_version_moves_the_generation_on(api, policy_dir, generation):
    assert api.post(RELOAD, OPERATOR).status_code == 200  # the same files: nothing to follow
    assert generation.value() == 0
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")
    assert api.post(RELOAD, OPERATOR).status_code == 200
    assert generation.value() == 1


def test_a_worker_loads_the_policy_another_worker_loaded_before_its_next_answer(
    app, api, policy_dir, store, generation
):
    """The watcher of this worker (watching off) and another worker's reload, told by
    the shared generation: the next request finds this worker on the new version."""
    watcher = PolicyWatcher(app, interval=0, generation=generation)
    old = store.current.version
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")
    watcher.keep_current()
    assert store.current.version == old  # no other worker said anything: files not read

    generation.publish()  # what the other worker does once it has loaded them
    watcher.keep_current()

    assert store.current.version == policy_version(policy_dir) != old
    assert last_event(api, "worker")["result"] == "success"
    assert generation.value() == 2  # this worker's load is told the others in turn
    watcher.keep_current()
    assert len([e for e in reload_events(api) if e["details"]["trigger"] == "worker"]) == 1


def test_a_failed_reload_in_another_worker_is_reported_here_and_its_fix_clears_it(
    app, api, policy_dir, store, generation
):
    watcher = PolicyWatcher(app, interval=0, generation=generation)
    good = store.current.version
    original = (policy_dir / "access.yaml").read_text(encoding="utf-8")
    write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)
    generation.publish()  # another worker failed on these files

    watcher.keep_current()
    assert "access.yaml" in store.last_reload_error and store.current.version == good
    assert generation.value() == 2  # this worker's failure is news to the others
    generation.publish()  # a third worker failed on them too: not tried again here
    watcher.keep_current()
    tries = [e for e in reload_events(api) if e["details"]["trigger"] == "worker"]
    assert [e["result"] for e in tries] == ["failure"]

    write_atomically(policy_dir / "access.yaml", original)
    generation.publish()  # another worker loaded the fixed files (the version in force)
    watcher.keep_current()
    assert store.last_reload_error is None and store.current.version == good


def test_a_new_version_is_told_the_other_workers_before_this_one_answers_under_it(policy_dir, tmp_path):
    """Told after the swap, this worker's request threads answered under the new version
    while the others still answered under the old one (for good, when the audit record
    in between failed: a database locked)."""
    store = PolicyStore(policy_dir, tmp_path / "last-good-policy")
    old = store.reload(START).version
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")
    told = []

    def announce() -> None:
        saved = (tmp_path / "last-good-policy" / "VERSION").read_text(encoding="utf-8")
        told.append((store.current.version, saved))  # what this worker serves, what the others follow

    new = store.reload(START, announce=announce).version
    assert told == [(old, new)]
    store.reload(START, announce=announce)  # the same files: nothing to tell
    assert len(told) == 1


def test_a_reload_whose_audit_record_fails_is_still_told(app, policy_dir, store, generation, monkeypatch):
    def database_locked(*args):
        raise RuntimeError("database is locked")

    monkeypatch.setattr("service.policy_reload._record", database_locked)
    watcher = PolicyWatcher(app, interval=0, generation=generation)
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")

    watcher._reload("watch")  # the watcher's thread: it logs what failed and goes on

    assert store.current.version == policy_version(policy_dir) and generation.value() == 1


def test_a_request_thread_waits_for_a_load_another_thread_of_its_worker_began(
    app, policy_dir, store, generation, monkeypatch
):
    watcher = PolicyWatcher(app, interval=0, generation=generation)
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")
    generation.publish()
    loading, go_on = threading.Event(), threading.Event()
    load = watcher._reload
    monkeypatch.setattr(watcher, "_reload", lambda trigger: (loading.set(), go_on.wait(10), load(trigger)))
    served: list[str] = []

    def second_request() -> None:
        watcher.keep_current()
        served.append(store.current.version)  # the version its answer would carry

    first = threading.Thread(target=watcher.keep_current)
    first.start()
    assert loading.wait(10)
    second = threading.Thread(target=second_request)
    second.start()
    second.join(timeout=1)  # were it not to wait for the load, it would be done by now
    go_on.set()
    first.join(timeout=10)
    second.join(timeout=10)

    assert served == [policy_version(policy_dir)]


def two_workers(app, tmp_path) -> tuple[list, ProcessCounter]:
    """Two apps on one database, policy folder and snapshot, told of each other's policy
    changes by one generation, as two workers of `make serve` are."""
    config = {**app.config, "POLICY_SNAPSHOT_DIR": str(tmp_path / "last-good-policy")}
    generation = ProcessCounter()
    workers = [create_app(config) for _ in range(2)]
    for worker in workers:
        worker.extensions["policy_generation"] = generation
    return workers, generation


def test_a_worker_serves_the_policy_another_loaded_even_if_the_files_broke_since(
    app, policy_dir, tmp_path, approved_request
):
    """The reload answered by one worker is in force in all of them (SPEC §3: a failed
    reload keeps the last good policy). Worker A loads a stricter policy; the files are
    broken before worker B hears of it. B used to load the files itself, fail, and keep
    the older policy: eve's read stayed allowed there after A's reload had answered."""
    (worker_a, worker_b), generation = two_workers(app, tmp_path)
    a, b = Api(worker_a.test_client()), Api(worker_b.test_client())
    watcher = PolicyWatcher(worker_b, interval=0, generation=generation)
    assert b.post("/v1/decisions", CLIENT, read_check()).get_json()["allowed"] is True
    edit(policy_dir / "access.yaml", "  - signInLogs\n", "")
    stricter = a.post(RELOAD, OPERATOR).get_json()["version"]
    write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)

    watcher.keep_current()

    after = b.post("/v1/decisions", CLIENT, read_check()).get_json()
    assert (after["allowed"], after["reason"], after["policy_version"]) == (
        False,
        "category_not_allowed",
        stricter,
    )
    body = shown(b)
    assert body["version"] == stricter and "access.yaml" in body["last_reload_error"]
    followed = [e for e in reload_events(b) if e["details"]["trigger"] == "worker"]
    assert [(e["result"], e["details"].get("source")) for e in followed] == [
        ("success", "snapshot"),  # A's policy ...
        ("failure", None),  # ... then the files, which B reports as broken too
    ]


def test_files_reverted_and_reloaded_by_a_worker_still_on_them_are_followed_back(app, policy_dir, tmp_path):
    """B reloads v2; the files go back to v1; A, which never left v1, reloads them (a
    SIGHUP to it alone): its version does not change, but the snapshot does, and B must
    follow it back to the files in force (before, B kept v2 for good, watching off)."""
    (worker_a, worker_b), generation = two_workers(app, tmp_path)
    watcher_a, watcher_b = (PolicyWatcher(w, interval=0, generation=generation) for w in (worker_a, worker_b))
    original = (policy_dir / "access.yaml").read_text(encoding="utf-8")
    edit(policy_dir / "access.yaml", "  - signInLogs\n", "  - signInLogs\n  - mailboxContents\n")
    assert Api(worker_b.test_client()).post(RELOAD, OPERATOR).status_code == 200
    watcher_b.keep_current()  # B's next request: its own news, nothing to do
    write_atomically(policy_dir / "access.yaml", original)

    watcher_a._check("sighup", force=True)
    watcher_b.keep_current()

    assert worker_b.extensions["policy_store"].current.version == policy_version(policy_dir)


def test_a_worker_following_good_files_from_the_snapshot_reads_them_no_more(app, policy_dir, tmp_path):
    (worker_a, worker_b), generation = two_workers(app, tmp_path)
    store_b = worker_b.extensions["policy_store"]
    watcher = PolicyWatcher(worker_b, interval=0, generation=generation)
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")
    assert Api(worker_a.test_client()).post(RELOAD, OPERATOR).status_code == 200

    watcher.keep_current()

    assert store_b.current.version == policy_version(policy_dir) and store_b.last_reload_error is None
    events = [e for e in reload_events(Api(worker_b.test_client())) if e["details"]["trigger"] == "worker"]
    assert [e["details"].get("source") for e in events] == ["snapshot"]  # and no second load of the files


def test_a_snapshot_older_than_the_policy_served_is_not_followed(policy_dir, tmp_path, monkeypatch):
    """Only a snapshot saved after this worker's load. When a save fails (a full disk),
    the snapshot left is older than the files loaded since: a worker that then followed
    it on hearing news would take back a change it loaded (a reviewer's run: a read that
    the newer policy no longer allowed)."""
    snapshot = tmp_path / "last-good-policy"
    a = PolicyStore(policy_dir, snapshot)
    a.reload(START)
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PolicyStore, "_save_snapshot_now", disk_full)
    newer = a.reload(START).version
    b = PolicyStore(policy_dir, snapshot)  # a worker started since
    assert b.reload(START).version == newer
    write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)

    assert a.follow_snapshot(START) is False and b.follow_snapshot(START) is False
    assert a.current.version == b.current.version == newer


def test_a_load_of_older_files_saved_late_is_not_numbered_past_a_newer_one(policy_dir, tmp_path, monkeypatch):
    """Worker A loads v2 and is slow to save it; meanwhile the files become v3 and B
    loads them. Were A's save numbered past B's, workers hearing the news would follow
    A's older policy (in a reviewer's run, one that let a Global Reader manage access).
    A load and its save hold the snapshot's lock, so B reads the files after A saved."""
    snapshot = tmp_path / "last-good-policy"
    a, b, c = (PolicyStore(policy_dir, snapshot) for _ in range(3))
    for store in (a, b, c):
        store.reload(START)
    loaded, go_on = threading.Event(), threading.Event()
    load = load_policy

    def slow_for_a(*args, **kwargs):
        policy = load(*args, **kwargs)
        if threading.current_thread().name == "A":
            loaded.set()
            go_on.wait(10)
        return policy

    monkeypatch.setattr("service.policy_store.load_policy", slow_for_a)
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")
    older = threading.Thread(target=a.reload, args=(START,), name="A")
    older.start()
    assert loaded.wait(10)
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 4h", "max_grant_duration: 2h")
    newer = threading.Thread(target=b.reload, args=(START,), name="B")
    newer.start()
    newer.join(timeout=1)  # were it not to wait for A's save, it would have saved by now
    go_on.set()
    older.join(10)
    newer.join(10)
    assert b.current.version == policy_version(policy_dir)
    write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)

    assert c.follow_snapshot(START) is True
    assert c.current.version == b.current.version != a.current.version


def test_a_snapshot_removed_and_saved_again_is_still_followed(policy_dir, tmp_path):
    snapshot = tmp_path / "last-good-policy"
    a, b = PolicyStore(policy_dir, snapshot), PolicyStore(policy_dir, snapshot)
    for _ in range(3):  # numbers past a fresh snapshot's first
        edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")
        a.reload(START)
        b.reload(START)
        edit(policy_dir / "workflow.yaml", "max_grant_duration: 4h", "max_grant_duration: 8h")
        a.reload(START)
        b.reload(START)
    shutil.rmtree(snapshot)
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 2h")
    new = a.reload(START).version
    write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)

    assert b.follow_snapshot(START) is True and b.current.version == new


def test_the_error_shown_after_following_names_the_policy_served(policy_dir, tmp_path):
    snapshot = tmp_path / "last-good-policy"
    first = PolicyStore(policy_dir, snapshot).reload(START).version
    original = (policy_dir / "access.yaml").read_text(encoding="utf-8")
    write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)
    b = PolicyStore(policy_dir, snapshot)
    with pytest.raises(PolicyError) as raised:
        b.reload(START)
    assert b.start_from_snapshot(START, raised.value) and first in b.last_reload_error
    write_atomically(policy_dir / "access.yaml", original.replace("  - signInLogs\n", ""))
    second = PolicyStore(policy_dir, snapshot).reload(START).version  # another worker
    write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)  # the same broken bytes again

    assert b.follow_snapshot(START) is True
    assert b.current.version == second
    assert b.last_reload_error == f"{raised.value.message} (serving the last good policy {second})"


def test_a_snapshot_saved_before_snapshots_had_ids_still_serves_a_start(app, policy_dir, tmp_path):
    config = {**app.config, "POLICY_SNAPSHOT_DIR": str(tmp_path / "snapshot")}
    good = create_app(config).extensions["policy_store"].current.version
    (tmp_path / "snapshot" / "ID").unlink()
    write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)
    assert shown(Api(create_app(config).test_client()))["version"] == good


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_a_real_sighup_reloads(app, api, policy_dir, store):
    """With watching off (interval 0, SUPPORT_ACCESS_POLICY_WATCH_INTERVAL=0) a changed file
    stays unread until the process gets SIGHUP."""
    assert threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGHUP)
    watcher = PolicyWatcher(app, interval=0, generation=ProcessCounter())
    try:
        watcher.install_signal_handler()
        watcher.start_once()
        old = store.current.version
        edit(policy_dir / "workflow.yaml", "retention: 30d", "retention: 14d")
        time.sleep(0.2)
        assert store.current.version == old  # not watching: nothing reloaded yet
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_for(lambda: store.current.version == policy_version(policy_dir)), "SIGHUP did not reload"
        assert store.current.timing.retention.days == 14
        assert last_event(api, "sighup")["details"]["version"] == policy_version(policy_dir)
    finally:
        signal.signal(signal.SIGHUP, previous)
        watcher.stop()
        watcher.thread.join(timeout=5)
    assert not watcher.thread.is_alive()


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
@pytest.mark.timeout(120)  # the fault it guards against was a thread blocked for ever
def test_a_burst_of_sighups_reloads_and_never_blocks_the_process(app, api, policy_dir, store):
    """A SIGHUP that came while the handler ran for the one before waited, in the same
    thread, for a lock that handler held (a threading.Event's), for ever; or nested
    handlers ended in a RecursionError."""
    previous = signal.getsignal(signal.SIGHUP)
    watcher = PolicyWatcher(app, interval=0, generation=ProcessCounter())
    burst = f"end=$((SECONDS+2)); while [ $SECONDS -lt $end ] && kill -HUP {os.getpid()}; do :; done"
    sender = None
    try:
        watcher.install_signal_handler()
        assert signal.getsignal(signal.SIGHUP) is not previous  # else SIGHUP ends pytest
        watcher.start_once()
        edit(policy_dir / "workflow.yaml", "retention: 30d", "retention: 14d")
        sender = subprocess.Popen(["bash", "-c", burst])
        while sender.poll() is None:  # this thread runs Python code, so it runs the handlers
            time.sleep(0.0001)
        assert wait_for(lambda: store.current.version == policy_version(policy_dir)), "SIGHUP did not reload"
    finally:
        if sender is not None:  # before SIGHUP's default action (the end of this process) is back
            sender.kill()
            sender.wait()
        signal.signal(signal.SIGHUP, previous)
        watcher.stop()
        watcher.thread.join(timeout=5)
    assert not watcher.thread.is_alive()


def test_a_policy_folder_that_is_no_utf8_path_is_refused_at_start(tmp_path, monkeypatch):
    """The folder is named in the audit log and GET /v1/policy: such a path failed every
    reload (a 500) after the policy had been swapped in, its audit event lost."""
    folder = os.fsdecode(bytes(tmp_path) + b"/policies-\xff")
    shutil.copytree(REPO_POLICY_DIR, folder)
    monkeypatch.setenv("SUPPORT_ACCESS_DATABASE_URL", f"sqlite:///{tmp_path / 'utf8.db'}")
    monkeypatch.setenv("SUPPORT_ACCESS_JWT_SECRET", "a-development-secret-of-32-bytes!")
    monkeypatch.setenv("SUPPORT_ACCESS_POLICY_DIR", folder)
    with pytest.raises(ConfigError, match=r"POLICY_DIR: .*policies-\\xff is not a UTF-8 path"):
        create_app()


@pytest.mark.parametrize("setting", ["2s", "abc", "-1", "nan", "inf", "1e-9"])
def test_a_watch_interval_that_is_no_number_of_seconds_is_refused_at_start(tmp_path, monkeypatch, setting):
    """Refused with a ConfigError (`cannot start: ...`, or a command's `Error: ...`), not a
    worker's traceback."""
    monkeypatch.setenv("SUPPORT_ACCESS_DATABASE_URL", f"sqlite:///{tmp_path / 'watch.db'}")
    monkeypatch.setenv("SUPPORT_ACCESS_JWT_SECRET", "a-development-secret-of-32-bytes!")
    monkeypatch.setenv("SUPPORT_ACCESS_DECISION_LOG", "")
    monkeypatch.setenv("SUPPORT_ACCESS_POLICY_WATCH_INTERVAL", setting)
    with pytest.raises(ConfigError, match=f"POLICY_WATCH_INTERVAL: '{setting}' is not a number of seconds"):
        create_app()
    monkeypatch.setenv("SUPPORT_ACCESS_POLICY_WATCH_INTERVAL", "0.5")
    assert create_app().config["POLICY_WATCH_INTERVAL"] == 0.5


def production_app(tmp_path, policy_dir, clock, watch_interval: float = 0):
    """An app as `make serve` builds one (TESTING off), on a SQLite file in tmp_path."""
    from tests.conftest import SECRET

    return create_app(
        {
            "TESTING": False,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.db'}",
            "JWT_SECRET": SECRET,
            "POLICY_DIR": str(policy_dir),
            "POLICY_SNAPSHOT_DIR": str(tmp_path / "last-good-policy"),
            "DECISION_LOG": "",
            "CLOCK": clock,
            "POLICY_WATCH_INTERVAL": watch_interval,  # 0: only other workers' news
        }
    )


def test_a_production_app_catches_sighup_and_watches_once_it_serves(tmp_path, policy_dir, clock):
    """Outside TESTING create_app() installs the SIGHUP handler and starts watching with the
    first request (so the thread runs in the serving process, not in CLI commands)."""
    previous = signal.getsignal(signal.SIGHUP)
    app = None
    try:
        app = production_app(tmp_path, policy_dir, clock, watch_interval=0.05)
        watcher = app.extensions["policy_watcher"]
        store = app.extensions["policy_store"]
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN, previous)
        assert not watcher.thread.is_alive()  # nothing served yet
        assert app.test_client().get("/healthz").status_code == 200
        assert watcher.thread.is_alive()

        old = store.current.version
        edit(policy_dir / "workflow.yaml", "pending_ttl: 24h", "pending_ttl: 6h")
        assert wait_for(lambda: store.current.version != old), "the service did not watch its files"

        before = store.current
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_for(lambda: store.current is not before), "SIGHUP did not reload"
    finally:
        signal.signal(signal.SIGHUP, previous)
        if app is not None and "policy_watcher" in app.extensions:
            app.extensions["policy_watcher"].stop()
            app.extensions["policy_watcher"].thread.join(timeout=5)


def test_a_snapshot_that_cannot_be_locked_stops_neither_a_start_nor_a_reload(
    app, policy_dir, tmp_path, monkeypatch
):
    """A file system without locks (ENOLCK, as on some network mounts) answered a reload
    with a 500 and stopped a worker from starting: the lock orders the snapshots, and a
    policy is served without one, as it is without a snapshot."""

    flock = fcntl.flock

    def no_locks(target, operation):
        if str(getattr(target, "name", "")).endswith("last-good-policy.lock"):
            raise OSError(37, "No locks available")
        return flock(target, operation)

    monkeypatch.setattr(fcntl, "flock", no_locks)
    worker = create_app({**app.config, "POLICY_SNAPSHOT_DIR": str(tmp_path / "last-good-policy")})
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")
    answer = Api(worker.test_client()).post(RELOAD, OPERATOR)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["version"] == policy_version(policy_dir)


@pytest.mark.parametrize("name", [b"policies ", b"policies-\xff"])
def test_a_policy_folder_has_its_snapshot_whatever_its_name(tmp_path, name):
    """The snapshot names its folder by the path's bytes, as written: stripped, a name
    ending in a space matched no snapshot; written as UTF-8 text, a path that is not
    failed every reload after the swap (UnicodeEncodeError)."""
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/" + name))
    shutil.copytree(REPO_POLICY_DIR, folder)
    snapshot = tmp_path / "last-good-policy"
    good = PolicyStore(folder, snapshot).reload(START).version
    write_atomically(folder / "access.yaml", BROKEN_ACCESS)
    restarted = PolicyStore(folder, snapshot)
    with pytest.raises(PolicyError) as raised:
        restarted.reload(START)
    assert restarted.start_from_snapshot(START, raised.value) and restarted.current.version == good


@pytest.mark.parametrize("saved_first_by", [None, "a command", "a worker that never answered"])
def test_a_worker_restarted_alone_on_changed_files_is_followed_before_it_answers(
    tmp_path, policy_dir, clock, saved_first_by
):
    """A worker respawned by the server loads the files as they are now; the others kept
    the policy they had (watching off: until a reload), so two versions answered at once
    (a reviewer saw one worker allow what the other denied, for good). Its first answer
    tells them, even when something else saved that version's snapshot first (a CLI
    command builds the app too; a respawned worker may die before it answers)."""
    previous = signal.getsignal(signal.SIGHUP)
    apps = []
    try:
        apps.append(production_app(tmp_path, policy_dir, clock))
        running = apps[0].extensions["policy_store"]
        old = running.current.version
        edit(policy_dir / "access.yaml", "  - signInLogs\n", "")
        if saved_first_by:
            apps.append(production_app(tmp_path, policy_dir, clock))  # loads and saves, never answers
        apps.append(production_app(tmp_path, policy_dir, clock))  # the worker restarted
        new = apps[-1].extensions["policy_store"].current.version
        assert new != old and running.current.version == old

        assert apps[-1].test_client().get("/healthz").status_code == 200  # its first answer
        assert apps[0].test_client().get("/healthz").status_code == 200  # the other's next one

        assert running.current.version == new
    finally:
        signal.signal(signal.SIGHUP, previous)
        for app in apps:
            app.extensions["policy_watcher"].stop()


def test_a_load_by_another_worker_while_this_one_starts_is_heard(tmp_path, policy_dir, clock, monkeypatch):
    """The generation is read before the start's load: read after it, another worker's
    load landing in between (files changed, then broken) would never be followed."""
    from service.state_signal import POLICY_SUFFIX, SharedCounter

    database = tmp_path / "prod.db"
    snapshot = tmp_path / "last-good-policy"
    other_version = []
    reload = PolicyStore.reload

    def another_worker_loads_meanwhile(store, now):
        loaded = reload(store, now)
        if not other_version:  # just after this worker's start read the files
            edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")
            other_version.append(reload(PolicyStore(policy_dir, snapshot), now).version)
            write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)
            SharedCounter(f"{database}.{POLICY_SUFFIX}").publish()  # as that worker tells the others
        return loaded

    monkeypatch.setattr(PolicyStore, "reload", another_worker_loads_meanwhile)
    previous = signal.getsignal(signal.SIGHUP)
    try:
        app = production_app(tmp_path, policy_dir, clock)
    finally:
        signal.signal(signal.SIGHUP, previous)
    monkeypatch.undo()
    app.extensions["policy_watcher"].keep_current()  # what runs before this worker's first answer

    assert app.extensions["policy_store"].current.version == other_version[0]


# --- reloads racing decisions ------------------------------------------------------------

CATEGORIES_A = "  - signInLogs\n"
CATEGORIES_C = "  - newCategory\n"  # C: signInLogs replaced by a new category


def test_decisions_racing_many_reloads_only_see_whole_loaded_policies(app, policy_dir, approved_request):
    """4 threads ask for decisions while the main thread reloads ≥ 20 times, alternating
    good (A), broken (B) and good-but-different (C) files. Every answer is a 200 stamped
    with a version that was loaded, and its allow/deny matches that version's rules:
    under A eve may read signInLogs but not newCategory, under C the reverse."""
    access = policy_dir / "access.yaml"
    text_a = access.read_text(encoding="utf-8")
    assert CATEGORIES_A in text_a
    contents = {"A": text_a, "B": BROKEN_ACCESS, "C": text_a.replace(CATEGORIES_A, CATEGORIES_C)}
    version_of = {}
    for name in ("C", "A"):  # the versions A and C will have, computed from the files
        write_atomically(access, contents[name])
        version_of[name] = policy_version(policy_dir)
    expected = {
        version_of["A"]: {"signInLogs": (True, "granted"), "newCategory": (False, "category_not_allowed")},
        version_of["C"]: {"signInLogs": (False, "category_not_allowed"), "newCategory": (True, "granted")},
    }
    loaded = {app.extensions["policy_store"].current.version}
    assert loaded == {version_of["A"]}

    stop = threading.Event()
    results: list[list[tuple]] = [[] for _ in range(4)]
    crashes: list[BaseException] = []

    def worker(index: int) -> None:
        api = Api(app.test_client())

        def decide(n: int) -> None:
            category = ("signInLogs", "newCategory")[(n + index) % 2]
            answer = api.post("/v1/decisions", CLIENT, read_check(resource=f"diagnostics/{category}"))
            results[index].append((category, answer.status_code, answer.get_json()))

        try:
            n, deadline = 0, time.monotonic() + 120  # bounded even if the main thread never says stop
            while not stop.is_set() and time.monotonic() < deadline:
                decide(n)
                n += 1
            for tail in range(10):  # after the last reload (C is in force), whatever the scheduling
                decide(n + tail)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            crashes.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    # Every thread decides under A before the first reload, whatever the scheduling.
    assert wait_for(lambda: all(results), timeout=30), "a decision thread did not start"
    operator = Api(app.test_client())
    statuses = []
    try:
        for step in range(24):
            name = ("A", "B", "C", "B")[step % 4]
            write_atomically(access, contents[name])
            answer = operator.post(RELOAD, OPERATOR)
            statuses.append((name, answer.status_code))
            if answer.status_code == 200:
                loaded.add(answer.get_json()["version"])
            time.sleep(0.005)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a decision thread hung"
    assert not crashes, crashes

    assert all(code == (409 if name == "B" else 200) for name, code in statuses), statuses
    assert loaded == {version_of["A"], version_of["C"]}

    answers = [answer for per_thread in results for answer in per_thread]
    assert all(len(per_thread) >= 10 for per_thread in results)
    seen = set()
    for category, status, body in answers:
        assert status == 200, body
        version = body["policy_version"]
        assert version in loaded, body
        assert (body["allowed"], body["reason"]) == expected[version][category], (category, body)
        seen.add(version)
    assert seen == {version_of["A"], version_of["C"]}  # decided before and after the reloads


def test_reload_policy_failure_raises_and_keeps_the_policy(app, policy_dir, store):
    """The function behind all three triggers."""
    from service.errors import PolicyError

    good = store.current
    write_atomically(policy_dir / "roles.yaml", "roles: []\n")
    with pytest.raises(PolicyError) as raised:
        reload_policy(app, "test")
    assert "roles.yaml" in raised.value.message
    assert store.current is good
    assert store.last_reload_error == raised.value.message


def test_a_start_on_broken_files_serves_the_last_good_policy_and_says_so(app, tmp_path, policy_dir):
    """SPEC §3: a policy that fails to load keeps the last good one in force and says so
    (log, metric, API), at a start as at a reload."""
    config = {**app.config, "POLICY_SNAPSHOT_DIR": str(tmp_path / "snapshot")}
    first = create_app(config)  # its policy is the last good one from now on
    good = first.extensions["policy_store"].current.version
    before = failed_starts(first.test_client())
    write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)
    restarted = Api(create_app(config).test_client())
    body = shown(restarted)
    assert body["version"] == good and "access.yaml" in body["last_reload_error"]
    assert failed_starts(restarted.client) == before + 1


def failed_starts(client) -> float:
    """support_access_policy_reloads_total{result="failure",trigger="start"} on /metrics."""
    name = 'support_access_policy_reloads_total{result="failure",trigger="start"} '
    lines = client.get("/metrics").get_data(as_text=True).splitlines()
    return next((float(line[len(name) :]) for line in lines if line.startswith(name)), 0.0)


# --- production serving ---------------------------------------------------------------


def test_sighup_to_the_server_with_a_broken_policy_keeps_serving_the_last_good_one(
    tmp_path, policy_dir, database_url
):
    """`make serve` (granian) respawns its workers on SIGHUP; the new workers find the
    policy files broken and serve the last good snapshot instead of failing to start."""
    from tests.served import call, served

    with served(tmp_path, policy_dir, database_url) as (port, server):
        status, good = call(port, "GET", "/v1/policy", OPERATOR)
        assert status == 200
        write_atomically(policy_dir / "access.yaml", BROKEN_ACCESS)
        old_pids = {call(port, "GET", "/healthz")[1]["pid"] for _ in range(10)}
        server.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30  # the server respawns its workers (slower on a busy machine)
        while True:
            time.sleep(0.2)
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-1500:]
            answers = [call(port, "GET", "/healthz") for _ in range(10)]
            if all(status == 200 and health["pid"] not in old_pids for status, health in answers):
                break  # only new workers answer: the old ones are gone
            assert time.monotonic() < deadline, f"the workers were not respawned: {answers}"
        answers = [call(port, "GET", "/v1/policy", OPERATOR) for _ in range(6)]
        assert all(status == 200 and body["version"] == good["version"] for status, body in answers), answers
        assert any("access.yaml" in (body["last_reload_error"] or "") for _, body in answers), answers


def test_processes_saving_the_same_snapshot_take_turns(tmp_path, monkeypatch):
    """Workers that load the same new files save the last good snapshot together; one's
    removal of the old snapshot failed under the other's replace ("Directory not empty")."""
    stores = [PolicyStore(REPO_POLICY_DIR, tmp_path / "last-good") for _ in range(2)]
    inside, most = [], []
    save_now = PolicyStore._save_snapshot_now

    def slow_save(store, policy, number):
        inside.append(store)
        most.append(len(inside))
        time.sleep(0.3)  # long enough for the other thread to arrive
        save_now(store, policy, number)
        inside.remove(store)

    monkeypatch.setattr(PolicyStore, "_save_snapshot_now", slow_save)
    threads = [threading.Thread(target=store.reload, args=(START,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most == [1]  # one saved; the other then found it saved
    version = policy_version(REPO_POLICY_DIR)
    assert (tmp_path / "last-good" / "VERSION").read_text(encoding="utf-8") == version


# --- snapshots that must never be served -------------------------------------------


def _broken_start(directory, snapshot):
    store = PolicyStore(directory, snapshot)
    with pytest.raises(PolicyError) as raised:
        store.reload(START)
    return store, raised.value


def test_a_snapshot_whose_files_are_not_its_version_is_never_served(tmp_path):
    directory, snapshot = copy_policies(tmp_path, "policies"), tmp_path / "last-good-policy"
    PolicyStore(directory, snapshot).reload(START)
    # the snapshot's files changed behind its VERSION (a partial or tampered save)
    edit(snapshot / "files" / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 800h")
    (directory / "access.yaml").write_text(BROKEN_ACCESS, encoding="utf-8")
    store, error = _broken_start(directory, snapshot)
    assert store.start_from_snapshot(START, error) is False
    assert not store.loaded


def test_a_snapshot_of_another_policy_directory_is_never_served(tmp_path):
    snapshot = tmp_path / "last-good-policy"
    other = copy_policies(tmp_path, "other")
    edit(other / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: 4h")
    PolicyStore(other, snapshot).reload(START)
    mine = copy_policies(tmp_path, "mine")
    (mine / "access.yaml").write_text(BROKEN_ACCESS, encoding="utf-8")
    store, error = _broken_start(mine, snapshot)
    assert store.start_from_snapshot(START, error) is False
    assert not store.loaded


def test_a_snapshot_of_the_version_served_is_not_followed_again(tmp_path):
    """Only news is followed: a snapshot saved anew of the very version served is marked
    seen, not loaded and recorded as a reload from the snapshot."""
    directory, snapshot = copy_policies(tmp_path, "policies"), tmp_path / "last-good-policy"
    a, b = PolicyStore(directory, snapshot), PolicyStore(directory, snapshot)
    a.reload(START)
    served = b.reload(START)
    shutil.rmtree(snapshot)
    assert a.reload(START).version == served.version  # saved again, under a new id
    assert b.follow_snapshot(START) is False
    assert b.current is served

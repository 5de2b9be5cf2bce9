"""Several instances on one PostgreSQL database (SPEC §8): a change made through one is
in force on the others within the bound the README states (service/change_listener.py),
and an instance that cannot hear the others refuses to decide rather than allow."""

from __future__ import annotations

import os
import time

import pytest

from service import change_listener
from service.change_listener import ChangeListener
from service.errors import Unavailable
from service.policy import REPO_POLICY_DIR
from service.state_signal import ProcessCounter, SharedCounter
from tests.conftest import read_check
from tests.served import call, served, served_grant

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"  # port 1: nothing listens
on_postgres = pytest.mark.skipif(
    not os.environ.get("SUPPORT_ACCESS_TEST_POSTGRES"),
    reason="needs a PostgreSQL server (the PostgreSQL pass of make test, tests/postgres.sh)",
)


def test_a_listener_that_cannot_reach_the_database_refuses_decisions():
    listener = ChangeListener(UNREACHABLE, ProcessCounter())
    try:
        with pytest.raises(Unavailable):
            listener.check_fresh()
    finally:
        listener.stop()


def test_decisions_answer_503_not_an_allow_when_other_instances_cannot_be_heard(
    app, api, approved_request, monkeypatch
):
    assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is True
    listener = ChangeListener(UNREACHABLE, ProcessCounter())
    monkeypatch.setattr(app.extensions["decision_service"], "listener", listener)
    try:
        for url, body in (
            ("/v1/decisions", read_check()),
            ("/v1/decisions/batch", {"checks": [read_check()] * 2}),
        ):
            answer = api.post(url, "diag-tool", body)
            assert answer.status_code == 503, answer.get_json()
            assert answer.get_json()["error"]["code"] == "unavailable"
    finally:
        listener.stop()


@on_postgres
def test_the_listener_hears_a_change_committed_through_another_connection(app, api, tmp_path):
    counter = SharedCounter(tmp_path / "other-machine.changes")
    listener = ChangeListener(app.config["DATABASE_URL"], counter)
    try:
        listener.check_fresh()  # connected and listening
        before = counter.value()
        body = {"tenant_id": "fabrikam", "resource_tenant_id": "contoso", "title": "t"}
        assert api.post("/v1/support-requests", "bob", body).status_code == 201
        deadline = time.monotonic() + change_listener.STALE_AFTER
        while counter.value() == before:
            assert time.monotonic() < deadline, "the change was not heard"
            time.sleep(0.01)
    finally:
        listener.stop()


@on_postgres
def test_a_revocation_through_one_instance_is_in_force_on_another_within_the_bound(tmp_path, database_url):
    """Two instances with nothing shared but the database (each its own read journal and
    change counter, as on two machines)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = served(tmp_path / "a", REPO_POLICY_DIR, database_url, workers=1, journal_dir=tmp_path / "a-reads")
    other = served(tmp_path / "b", REPO_POLICY_DIR, database_url, workers=1, journal_dir=tmp_path / "b-reads")
    with one as (port_a, _), other as (port_b, _):
        ticket_id, request_id = served_grant(port_a)
        check = read_check(support_request_id=ticket_id)
        assert _first_answer_within_bound(port_b, check, allowed=True) is not None, "the grant was not heard"

        status, body = call(port_a, "POST", f"/v1/access-requests/{request_id}/revoke", "alice")
        assert status == 200 and body["status"] == "revoked", body
        elapsed = _first_answer_within_bound(port_b, check, allowed=False)
        assert elapsed is not None, "the other instance still allows after the bound"
        print(f"revocation in force on the other instance after {elapsed * 1000:.1f} ms")
        for _ in range(20):  # and stays so
            assert call(port_b, "POST", "/v1/decisions", "diag-tool", check)[1]["allowed"] is False


def _first_answer_within_bound(port: int, check: dict, allowed: bool) -> float | None:
    """Seconds until the instance at `port` answers `allowed` for `check`, or None if it
    does not within change_listener.STALE_AFTER (the bound)."""
    start = time.monotonic()
    while time.monotonic() - start <= change_listener.STALE_AFTER:
        status, answer = call(port, "POST", "/v1/decisions", "diag-tool", check)
        assert status == 200, answer
        if answer["allowed"] is allowed:
            return time.monotonic() - start
        time.sleep(0.005)
    return None

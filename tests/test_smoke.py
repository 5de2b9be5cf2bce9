"""The cross-tenant happy path end to end, through HTTP."""

import time
from datetime import timedelta

import pytest

from service import create_app
from service.policy import REPO_POLICY_DIR
from tests.conftest import SECRET, START, Api, read_check
from tests.helpers import DIRECTORY_FILE, app_config, parse_time


def test_cross_tenant_happy_path(api, approved_request, ticket):
    answer = api.post("/v1/decisions", "diag-tool", read_check())
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["allowed"] is True and body["reason"] == "granted"
    assert body["decision_id"] and body["policy_version"]
    events = api.get("/v1/audit-events?tenant_id=contoso&activity=diagnostics.read", "alice").get_json()
    assert [e["details"]["decision_id"] for e in events["items"]] == [body["decision_id"]]


def test_times_keep_their_milliseconds(api, clock):
    """Events a few hundred milliseconds apart must not show the same second."""
    clock.advance(milliseconds=250)
    created = api.post("/v1/support-requests", "bob", {"tenant_id": "fabrikam", "title": "t"}).get_json()
    assert parse_time(created["created_at"]) == START + timedelta(milliseconds=250)


@pytest.fixture
def zone_west_of_utc(monkeypatch):
    """The machine's local time zone five hours behind UTC (a POSIX TZ needs no tzdata)."""
    monkeypatch.setenv("TZ", "EST5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_on_the_system_clock_times_are_utc_whatever_the_machines_zone(tmp_path, zone_west_of_utc):
    """Production runs on the system clock (no CLOCK set): a local time taken for UTC would
    store every time shifted by the zone's offset, and read them back so."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    app = create_app(app_config(tmp_path, url, SECRET, POLICY_DIR=str(REPO_POLICY_DIR)))
    imported = app.test_cli_runner().invoke(args=["directory", "import", str(DIRECTORY_FILE)])
    assert imported.exit_code == 0, imported.output
    api = Api(app.test_client())

    created = api.post("/v1/support-requests", "bob", {"tenant_id": "fabrikam", "title": "zone"})
    assert created.status_code == 201, created.get_json()
    ticket = created.get_json()
    read_back = api.get(f"/v1/support-requests/{ticket['id']}", "bob").get_json()
    assert read_back["created_at"] == ticket["created_at"]
    events = api.get("/v1/audit-events?tenant_id=fabrikam&activity=support_request.created", "bob")
    assert [e["time"] for e in events.get_json()["items"]] == [ticket["created_at"]]

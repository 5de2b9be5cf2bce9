"""Shared fixtures: an app on a fresh SQLite file, a movable clock, and token helpers."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from models import database
from service import create_app
from service.auth import mint_token
from service.clock import FakeClock
from service.policy import REPO_POLICY_DIR
from tests.helpers import DIRECTORY_FILE
from tests.postgres import fresh_database

SECRET = "test-secret-that-is-long-enough-for-hs256"
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def policy_dir() -> Path:
    """The policy directory the app loads; override in a test module to change it."""
    return REPO_POLICY_DIR


@pytest.fixture
def restore_database():
    """For tests that point the shared database proxy (models.database) at a store of
    their own: it is closed (a pool's kept connections too) and put back after."""
    before = database.obj
    yield
    if not database.is_closed():
        database.close()
    if hasattr(database.obj, "close_all"):  # a pool keeps the connections handed back
        database.obj.close_all()
    database.initialize(before)


@pytest.fixture
def database_url(tmp_path):
    """A fresh, empty database: a SQLite file, or with SUPPORT_ACCESS_TEST_POSTGRES set
    (make test-postgres), a new database on that PostgreSQL server."""
    server = os.environ.get("SUPPORT_ACCESS_TEST_POSTGRES")
    if not server:
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    with fresh_database(server) as url:
        yield url


@pytest.fixture
def bare_app(tmp_path, clock, policy_dir, database_url):
    """The app on its fresh database, before any directory is imported."""
    return create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "JWT_SECRET": SECRET,
            "POLICY_DIR": str(policy_dir),
            "DECISION_LOG": str(tmp_path / "decisions.log"),
            "CLOCK": clock,
        }
    )


@pytest.fixture
def app(bare_app):
    """The app with tests/directory.yaml imported."""
    result = bare_app.test_cli_runner().invoke(args=["directory", "import", str(DIRECTORY_FILE)])
    assert result.exit_code == 0, result.output
    return bare_app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def token(sub: str, tenant: str = "provider", ttl: timedelta = timedelta(hours=1)) -> str:
    return mint_token(SECRET, sub, tenant, ttl, datetime.now(UTC))


def auth(sub: str, tenant: str = "provider") -> dict[str, str]:
    """Authorization header for principal `sub`."""
    return {"Authorization": f"Bearer {token(sub, tenant)}"}


class Api:
    """Small helper over the test client: `api.post("/v1/...", "alice", {...})`."""

    def __init__(self, client):
        self.client = client

    def call(self, method: str, url: str, who: str | None, body=None):
        headers = auth(who) if who else {}
        return self.client.open(url, method=method, headers=headers, json=body)

    def get(self, url, who):
        return self.call("GET", url, who)

    def post(self, url, who, body=None):
        return self.call("POST", url, who, body)

    def patch(self, url, who, body=None):
        return self.call("PATCH", url, who, body)

    def put(self, url, who, body=None):
        return self.call("PUT", url, who, body)

    def delete(self, url, who):
        return self.call("DELETE", url, who)


@pytest.fixture
def api(client) -> Api:
    return Api(client)


@pytest.fixture
def ticket(api):
    """A cross-tenant ticket: filed by fabrikam (bob) about contoso, assigned to eve."""
    body = {"tenant_id": "fabrikam", "resource_tenant_id": "contoso", "title": "sign-ins fail"}
    created = api.post("/v1/support-requests", "bob", body)
    assert created.status_code == 201, created.get_json()
    ticket_id = created.get_json()["id"]
    assigned = api.post(f"/v1/support-requests/{ticket_id}/assign", "eve", {"engineer": "eve"})
    assert assigned.status_code == 200, assigned.get_json()
    return assigned.get_json()


@pytest.fixture
def access_request(api, ticket):
    """A pending access request by eve on the cross-tenant ticket."""
    body = {"support_request_id": ticket["id"], "justification": "read sign-in logs"}
    created = api.post("/v1/access-requests", "eve", body)
    assert created.status_code == 201, created.get_json()
    return created.get_json()


@pytest.fixture
def approved_request(api, access_request):
    """The access request approved by alice (contoso) and bob (fabrikam)."""
    url = f"/v1/access-requests/{access_request['id']}/approve"
    assert api.post(url, "alice", {"tenant_id": "contoso"}).status_code == 200
    answer = api.post(url, "bob", {"tenant_id": "fabrikam"})
    assert answer.get_json()["status"] == "approved", answer.get_json()
    return answer.get_json()


def read_check(principal="eve", tenant_id="contoso", **extra) -> dict:
    return {
        "principal": principal,
        "tenant_id": tenant_id,
        "action": "read",
        "resource": "diagnostics/signInLogs",
        **extra,
    }

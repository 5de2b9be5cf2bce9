"""The cross-tenant happy path end to end, through HTTP."""

from tests.conftest import read_check


def test_cross_tenant_happy_path(api, approved_request, ticket):
    answer = api.post("/v1/decisions", "diag-tool", read_check())
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["allowed"] is True and body["reason"] == "granted"
    assert body["decision_id"] and body["policy_version"]
    events = api.get("/v1/audit-events?tenant_id=contoso&activity=diagnostics.read", "alice").get_json()
    assert [e["details"]["decision_id"] for e in events["items"]] == [body["decision_id"]]

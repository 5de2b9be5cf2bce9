"""The OpenAPI document the service serves: well-formed OpenAPI 3.1, complete (every route
of the app and nothing else), and true to the implementation (real responses validate
against the documented schemas, request bodies are validated against the documented ones).
"""

from __future__ import annotations

import copy
import inspect
import re
from pathlib import Path
from typing import Any

import jsonschema
import prometheus_client
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from service import admin
from service.validation import OPENAPI_PATH, openapi_document
from tests.conftest import auth, read_check

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
PATH_ITEM_KEYS = HTTP_METHODS | {"$ref", "summary", "description", "servers", "parameters"}
OPERATION_KEYS = {
    "tags",
    "summary",
    "description",
    "externalDocs",
    "operationId",
    "parameters",
    "requestBody",
    "responses",
    "callbacks",
    "deprecated",
    "security",
    "servers",
}
STATUS_KEY = re.compile(r"^(default|[1-5][0-9]{2}|[1-5]XX)$")
DOC_URI = "urn:support-access:openapi"
DOCUMENT_URLS = ("/v1/openapi.json", "/openapi.json", "/v1/openapi.yaml", "/openapi.yaml")
UNAUTHENTICATED = {"/healthz", "/readyz", "/metrics", *DOCUMENT_URLS}

API_MD_REASONS = {
    "granted",
    "advanced_diagnostics",
    "no_active_grant",
    "read_only",
    "grant_expired",
    "support_request_closed",
    "unknown_principal",
    "unknown_tenant",
    "category_not_allowed",
}


# --- helpers -------------------------------------------------------------------------


def openapi_path(flask_rule: str) -> str:
    """/v1/x/<id>/<path:role> -> /v1/x/{id}/{role}"""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", flask_rule)


def shape(path: str) -> str:
    """A path with its parameter names left out, so renaming a parameter is no mismatch."""
    return re.sub(r"\{[^{}]+\}", "{}", path)


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def resolve(document: dict, ref: str) -> Any:
    assert ref.startswith("#/"), f"only local $refs are used: {ref}"
    node: Any = document
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and token in node, f"$ref {ref} does not resolve"
        node = node[token]
    return node


def deref(document: dict, node: dict) -> dict:
    while "$ref" in node:
        node = resolve(document, node["$ref"])
    return node


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def html_operation(document: dict, operation: dict) -> bool:
    """An operation of the server-rendered admin page (project choice, not the JSON API):
    it answers HTML, and a form post's success is a redirect (POST, redirect, GET)."""
    responses = [deref(document, r) for r in operation["responses"].values()]
    return any("text/html" in r.get("content", {}) for r in responses)


def walk(node: Any, where: str = "#"):
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{where}/{escape(str(key))}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{where}/{index}")


def strict(document: dict) -> dict:
    """A copy where every object schema that lists its properties allows no others, so a
    field the service answers but the document does not describe fails validation."""
    document = copy.deepcopy(document)
    for _, node in walk(document):
        if isinstance(node, dict) and "properties" in node and "additionalProperties" not in node:
            if node.get("type") == "object":
                node["additionalProperties"] = False
    return document


class Contract:
    """Checks real responses against the document: the status must be documented for the
    operation the URL routes to, and the body must validate against its schema."""

    def __init__(self, app, document: dict):
        self.document = strict(document)
        resource = Resource(contents=self.document, specification=DRAFT202012)
        self.registry = Registry().with_resource(DOC_URI, resource)
        self.adapter = app.url_map.bind("localhost")
        self.seen: set[tuple[str, str, str]] = set()

    def template(self, method: str, url: str) -> str:
        rule, _ = self.adapter.match(url.split("?")[0], method=method.upper(), return_rule=True)
        return openapi_path(rule.rule)

    def check(self, response, method: str, url: str):
        """Validate `response` to `method url`; returns its JSON body."""
        template = self.template(method, url)
        body = response.get_json(silent=True)
        self.validate(body, method, template, response.status_code, response)
        return body

    def validate(self, body, method: str, template: str, status: int, response=None) -> None:
        method = method.lower()
        operation = self.document["paths"][template][method]
        key = str(status)
        assert key in operation["responses"], f"{method.upper()} {template} answered {status}: {body}"
        pointer = f"/paths/{escape(template)}/{method}/responses/{key}"
        answer = operation["responses"][key]
        if "$ref" in answer:
            pointer = answer["$ref"][1:]
            answer = deref(self.document, answer)
        content = answer.get("content")
        if not content:
            assert response is None or not response.get_data(), f"{method} {template} {status} has a body"
        else:
            media = response.mimetype if response is not None else "application/json"
            assert media in content, f"{method.upper()} {template} {status} answered {media}"
            if media == "application/json":
                schema = {"$ref": f"{DOC_URI}#{pointer}/content/{escape(media)}/schema"}
                validator = jsonschema.Draft202012Validator(
                    schema,
                    registry=self.registry,
                    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
                )
                errors = sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.path)))
                assert not errors, (
                    f"{method.upper()} {template} {status}: {errors[0].message} "
                    f"at {'/'.join(map(str, errors[0].absolute_path))}"
                )
        self.seen.add((method, template, key))


@pytest.fixture
def document(client) -> dict:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


@pytest.fixture
def contract(app, document) -> Contract:
    return Contract(app, document)


def app_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((shape(openapi_path(rule.rule)), method.lower()))
    return routes


# --- the document is well-formed OpenAPI 3.1 --------------------------------------


def test_served_document_is_the_one_requests_are_validated_against(document):
    assert document == openapi_document()


def test_libyaml_reads_the_document_as_the_pure_python_parser_does():
    """The service parses its document with libyaml (seven times faster, at each worker's
    start); an edit that libyaml would read differently fails here."""
    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML was built without libyaml")
    text = OPENAPI_PATH.read_text(encoding="utf-8")
    assert yaml.load(text, Loader=yaml.CSafeLoader) == yaml.safe_load(text)  # noqa: S506 (safe)


@pytest.mark.parametrize("url", DOCUMENT_URLS)
def test_document_is_served_without_a_token_as_json_and_yaml(client, url):
    """Wherever a client looks for it (/openapi.json, /v1/openapi.yaml, ...), it finds the
    same document, with no token."""
    response = client.get(url)
    assert response.status_code == 200
    if url.endswith(".json"):
        assert response.mimetype == "application/json"
        assert response.get_json() == openapi_document()
    else:
        assert response.mimetype == "application/yaml"
        assert yaml.safe_load(response.get_data(as_text=True)) == openapi_document()


def test_document_is_structurally_openapi_3_1(document):
    assert re.fullmatch(r"3\.1\.[0-9]+", document["openapi"])
    assert set(document) <= {
        "openapi",
        "info",
        "jsonSchemaDialect",
        "servers",
        "paths",
        "webhooks",
        "components",
        "security",
        "tags",
        "externalDocs",
    }
    assert isinstance(document["info"]["title"], str) and isinstance(document["info"]["version"], str)
    schemes = document["components"]["securitySchemes"]
    for requirement in document.get("security", []):
        assert set(requirement) <= set(schemes)
    for name, scheme in schemes.items():
        assert scheme["type"] in {"apiKey", "http", "mutualTLS", "oauth2", "openIdConnect"}, name

    operation_ids = []
    for path, item in document["paths"].items():
        assert path.startswith("/"), path
        assert set(item) <= PATH_ITEM_KEYS, f"{path}: {set(item) - PATH_ITEM_KEYS}"
        shared = [deref(document, p) for p in item.get("parameters", [])]
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            where = f"{method.upper()} {path}"
            assert set(operation) <= OPERATION_KEYS, f"{where}: {set(operation) - OPERATION_KEYS}"
            assert operation.get("summary"), f"{where}: no summary"
            assert "**Who:**" in operation.get("description", ""), f"{where}: does not say who may call it"
            operation_ids.append(operation["operationId"])
            for requirement in operation.get("security", []):
                assert set(requirement) <= set(schemes), where

            parameters = shared + [deref(document, p) for p in operation.get("parameters", [])]
            for parameter in parameters:
                assert parameter["in"] in {"query", "header", "path", "cookie"}, where
                assert "schema" in parameter or "content" in parameter, where
            in_path = {p["name"] for p in parameters if p["in"] == "path"}
            assert in_path == set(re.findall(r"\{([^{}]+)\}", path)), f"{where}: path parameters"
            assert all(p["required"] is True for p in parameters if p["in"] == "path"), where
            seen = [(p["name"], p["in"]) for p in parameters]
            assert len(seen) == len(set(seen)), f"{where}: duplicate parameters"

            if "requestBody" in operation:
                body = deref(document, operation["requestBody"])
                media = (
                    "application/x-www-form-urlencoded"
                    if html_operation(document, operation)
                    else "application/json"
                )
                assert "schema" in body["content"][media], where

            responses = operation["responses"]
            assert responses, f"{where}: no responses"
            success = ("2", "3") if html_operation(document, operation) else ("2",)
            assert any(code.startswith(success) for code in responses), f"{where}: no success response"
            for code, response in responses.items():
                assert isinstance(code, str) and STATUS_KEY.match(code), f"{where}: status {code!r}"
                response = deref(document, response)
                assert isinstance(response.get("description"), str), f"{where} {code}: no description"
                for media in response.get("content", {}).values():
                    assert "schema" in media, f"{where} {code}"
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"


def test_every_ref_resolves_and_every_schema_is_valid_json_schema(document):
    for where, node in walk(document):
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            resolve(document, node["$ref"])  # asserts
        if isinstance(node, dict):
            assert None not in node.values(), f"{where}: a null value (YAML typo?)"
    for name, schema in document["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert isinstance(name, str)


def test_errors_are_documented_as_the_api_md_contract_lists_them(document):
    for path, method, operation in operations(document):
        where = f"{method.upper()} {path}"
        codes = set(operation["responses"])
        if path.startswith("/v1/") and path not in UNAUTHENTICATED:
            assert {"401", "503"} <= codes, f"{where}: {codes}"
            assert operation.get("security", document["security"]), f"{where}: needs the bearer token"
        else:
            assert operation.get("security") == [], f"{where}: served without a token"
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= codes, f"{where}: {codes}"
        for code, response in operation["responses"].items():
            if code[0] in "45" and not html_operation(document, operation):
                schema = deref(document, response)["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, f"{where} {code}"


def test_response_schemas_carry_the_api_md_fields(document):
    schemas = document["components"]["schemas"]
    access_request = {
        "id",
        "support_request_id",
        "engineer",
        "resource_tenant_id",
        "support_request_tenant_id",
        "justification",
        "status",
        "required_approvals",
        "approvals",
        "created_at",
        "expires_at",
        "approved_at",
        "access_expires_at",
        "finished_at",
        "rejection_reason",
        "policy_version",
        "view",
    }
    assert access_request <= set(schemas["AccessRequest"]["required"])
    ticket = {"id", "tenant_id", "resource_tenant_id", "title", "status", "allow_advanced_diagnostics"}
    assert ticket | {"assigned_engineer", "created_at"} <= set(schemas["SupportRequest"]["required"])
    assert {"allowed", "reason", "decision_id", "policy_version"} <= set(schemas["Decision"]["required"])
    assert API_MD_REASONS | {"not_support_engineer"} <= set(schemas["DecisionReason"]["enum"])
    event = {"id", "time", "activity", "actor", "tenant_id", "target", "result", "details"}
    assert event <= set(schemas["AuditEvent"]["required"])
    assert {"version", "loaded_at", "last_reload_error"} <= set(schemas["Policy"]["required"])


# --- the document and the app agree on the routes ----------------------------------


def test_every_route_is_documented_and_every_documented_route_exists(app, document):
    routes = app_routes(app)
    documented = {(shape(path), method) for path, method, _ in operations(document)}
    assert routes - documented == set(), "routes the document does not describe"
    assert documented - routes == set(), "documented operations the app does not serve"


def admin_forms() -> dict[str, set[str]]:
    """The fields each form of the admin page's templates posts, by the view it posts to."""
    forms = {}
    for template in (Path(admin.__file__).parent / "templates" / "admin").glob("*.html"):
        found = re.findall(r"<form[^>]*url_for\('(admin\.\w+)'[^>]*>(.*?)</form>", template.read_text(), re.S)
        forms.update({endpoint: set(re.findall(r'name="(\w+)"', body)) for endpoint, body in found})
    return forms


def test_request_bodies_are_the_schemas_the_handlers_validate(app, document):
    """Each handler validates its body against components.schemas[X] (by name, through
    json_body / optional_body); the document must name that same X as its requestBody."""
    schemas = document["components"]["schemas"]
    forms = admin_forms()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        source = inspect.getsource(app.view_functions[rule.endpoint])
        named = [name for name in re.findall(r"\"(\w+)\"", source) if name in schemas]
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            path = openapi_path(rule.rule)
            operation = next(
                op for p, m, op in operations(document) if shape(p) == shape(path) and m == method.lower()
            )
            where = f"{method} {path}"
            if method == "POST" and html_operation(document, operation):
                form = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
                # The fields the page's form sends; every form post carries the CSRF
                # token (admin._check_csrf).
                assert set(form["properties"]) == forms[rule.endpoint], where
                assert "csrf_token" in form["required"], where
                continue
            if not named:
                assert "requestBody" not in operation, f"{where} takes no body"
                continue
            assert len(named) == 1, f"{where}: which of {named}?"
            body = operation["requestBody"]
            schema = {"$ref": f"#/components/schemas/{named[0]}"}
            assert body["content"]["application/json"]["schema"] == schema, where
            optional = "optional_body(" in source
            assert body.get("required", False) is not optional, f"{where}: required"


# --- real responses validate against the document -------------------------------------


def test_fixture_flow_responses_match_the_document(api, contract, ticket, approved_request):
    """The conftest happy path: ticket (bob), assign (eve), access request, two approvals."""
    contract.validate(ticket, "post", "/v1/support-requests/{ticket_id}/assign", 200)
    contract.validate(approved_request, "post", "/v1/access-requests/{request_id}/approve", 200)
    # bob approved last; he administers only the support request tenant, so he gets its view
    assert (approved_request["status"], approved_request["view"]) == ("approved", "support_request")

    decision = contract.check(api.post("/v1/decisions", "diag-tool", read_check()), "POST", "/v1/decisions")
    assert decision["allowed"] is True and decision["reason"] == "granted"
    url = "/v1/audit-events?tenant_id=contoso"
    events = contract.check(api.get(url, "alice"), "GET", url)["items"]
    assert "diagnostics.read" in [e["activity"] for e in events]


def test_every_operation_answers_as_documented(app, api, contract, document):
    """A full flow through every operation, each success response checked against its schema."""

    def call(method: str, url: str, who: str | None, body=None, status: int | None = None):
        response = api.call(method, url, who, body)
        if status is not None:
            assert response.status_code == status, (method, url, response.get_json())
        return contract.check(response, method, url)

    # health, metrics and the document itself: no token
    call("GET", "/healthz", None, status=200)
    call("GET", "/readyz", None, status=200)
    # Prometheus refuses a scrape whose Content-Type it cannot parse (e.g. two charsets).
    content_type = api.get("/metrics", None).headers["Content-Type"]
    assert content_type == prometheus_client.CONTENT_TYPE_LATEST
    assert content_type.count("charset") == 1
    call("GET", "/metrics", None, status=200)
    for url in DOCUMENT_URLS:
        call("GET", url, None, status=200)

    # directory (operator)
    call("PUT", "/v1/tenants/tailspin", "ops", {"name": "Tailspin Toys"}, status=201)
    call("PUT", "/v1/tenants/tailspin", "ops", {"name": "Tailspin Toys Ltd"}, status=200)
    url = "/v1/tenants/tailspin/role-assignments"
    body = {"principal": "tara", "role": "62e90394-69f5-4237-9190-012177145e10"}
    assert call("PUT", url, "ops", body, status=201)["role"] == "Global Administrator"
    call("PUT", url, "ops", {"principal": "tara", "role": "Global Administrator"}, status=200)
    call("PUT", url, "ops", {"principal": "tom", "role": "Reports Reader"}, status=201)
    call("DELETE", f"{url}/tom/Reports%20Reader", "ops", status=204)

    # a cross-tenant ticket: tailspin files it about contoso
    body = {"tenant_id": "tailspin", "resource_tenant_id": "contoso", "title": "sync fails"}
    ticket = call("POST", "/v1/support-requests", "tara", body, status=201)
    assert ticket["status"] == "open" and ticket["assigned_engineer"] is None
    ticket_url = f"/v1/support-requests/{ticket['id']}"
    call("GET", ticket_url, "tara", status=200)
    call("GET", "/v1/support-requests?status=open", "eve", status=200)
    call("POST", f"{ticket_url}/assign", "eve", {"engineer": "eve"}, status=200)
    call("PATCH", ticket_url, "tara", {"allow_advanced_diagnostics": True}, status=200)

    # an access request, rejected; a second one, withdrawn; a third one, approved and revoked
    body = {"support_request_id": ticket["id"], "justification": "read sync logs"}
    first = call("POST", "/v1/access-requests", "eve", body, status=201)
    assert first["status"] == "pending" and first["view"] == "resource"
    rejected = call(
        "POST", f"/v1/access-requests/{first['id']}/reject", "alice", {"tenant_id": "contoso"}, status=200
    )
    assert rejected["status"] == "rejected"
    second = call("POST", "/v1/access-requests", "eve", body, status=201)
    call("POST", f"/v1/access-requests/{second['id']}/cancel", "eve", status=200)
    third = call("POST", "/v1/access-requests", "eve", body, status=201)
    request_url = f"/v1/access-requests/{third['id']}"
    call("POST", f"{request_url}/approve", "alice", {"tenant_id": "contoso"}, status=200)
    approved = call("POST", f"{request_url}/approve", "tara", {"tenant_id": "tailspin"}, status=200)
    assert approved["status"] == "approved" and approved["access_expires_at"]

    check = read_check(support_request_id=ticket["id"], explain=True)
    decision = call("POST", "/v1/decisions", "diag-tool", check, status=200)
    assert decision["allowed"] is True and decision["explain"]
    checks = [read_check(), read_check(action="write"), read_check(tenant_id="nowhere", explain=True)]
    results = call("POST", "/v1/decisions/batch", "diag-tool", {"checks": checks}, status=200)["results"]
    assert [r["reason"] for r in results] == ["granted", "read_only", "unknown_tenant"]
    not_engineer = call("POST", "/v1/decisions", "diag-tool", read_check("alice"), status=200)
    assert not_engineer["reason"] == "not_support_engineer"

    revoked = call("POST", f"{request_url}/revoke", "alice", status=200)
    assert revoked["status"] == "revoked"
    seen_by_tailspin = call("GET", request_url, "tara", status=200)
    assert (seen_by_tailspin["status"], seen_by_tailspin["view"]) == ("approved", "support_request")
    listed = call("GET", "/v1/access-requests?tenant_id=tailspin&status=approved", "tara", status=200)
    assert [item["id"] for item in listed["items"]] == [third["id"]]
    call("GET", "/v1/access-requests", "eve", status=200)
    call("GET", f"{request_url}?tenant_id=contoso", "alice", status=200)

    call("GET", "/v1/audit-events?tenant_id=contoso&limit=5", "alice", status=200)
    url = "/v1/audit-events?tenant_id=tailspin&since=2026-11-02T09:00:00Z&activity=access_request.approved"
    call("GET", url, "tara", status=200)
    call("POST", f"{ticket_url}/close", "tara", status=200)
    assert call("GET", "/v1/policy", "ops", status=200)["last_reload_error"] is None
    assert call("GET", "/v1/policy", "ops", status=200)["provider_tenant"] == "provider"
    assert call("POST", "/v1/policy/reload", "ops", status=200)["last_reload_error"] is None

    documented = {
        (method, path) for path, method, op in operations(document) if not html_operation(document, op)
    }
    succeeded = {(method, path) for method, path, status in contract.seen if status.startswith("2")}
    assert documented - succeeded == set(), "operations the flow did not exercise"


def test_error_responses_match_the_document(app, api, client, contract, ticket, access_request):
    """401, 403, 404, 409, 400, 413 and 415 are documented where they occur and use Error."""

    def expect(status: int, method: str, url: str, who: str | None, body=None) -> dict:
        response = api.call(method, url, who, body)
        assert response.status_code == status, (method, url, response.get_json())
        return contract.check(response, method, url)["error"]

    request_url = f"/v1/access-requests/{access_request['id']}"
    assert expect(401, "GET", "/v1/support-requests", None)["code"] == "missing_token"
    expect(404, "GET", "/v1/support-requests/sr-nope", "alice")
    expect(404, "GET", request_url, "nina")
    expect(403, "POST", f"{request_url}/approve", "eve", {"tenant_id": "contoso"})
    expect(403, "GET", "/v1/policy", "alice")
    expect(403, "POST", "/v1/decisions", "eve", read_check())
    expect(409, "POST", f"{request_url}/revoke", "alice")
    duplicate = {"support_request_id": ticket["id"], "justification": "again"}
    assert expect(409, "POST", "/v1/access-requests", "eve", duplicate)["code"] == "access_request_exists"
    error = expect(400, "POST", "/v1/access-requests", "eve", {"support_request_id": ticket["id"]})
    assert "justification" in error["message"]
    error = expect(400, "POST", "/v1/decisions", "diag-tool", read_check(action="READ"))
    assert "action" in error["message"]
    expect(400, "GET", "/v1/audit-events", "alice")
    expect(400, "GET", "/v1/audit-events?tenant_id=", "alice")  # minLength 1
    expect(400, "GET", "/v1/access-requests?status=bogus", "eve")
    # A NUL character in the path or a query parameter, on operations with no body
    assert expect(400, "GET", "/v1/support-requests/sr-%00", "bob")["code"] == "invalid_field"
    assert expect(400, "GET", f"{request_url}?tenant_id=%00", "alice")["code"] == "invalid_query"
    assert expect(400, "GET", "/v1/policy?x=%00", "ops")["code"] == "invalid_query"
    expect(400, "DELETE", "/v1/tenants/contoso/role-assignments/a%00/Global%20Reader", "ops")

    url = "/v1/support-requests"
    response = client.post(url, data="title=x", headers=auth("bob"), content_type="text/plain")
    assert response.status_code == 415
    contract.check(response, "POST", url)
    big = b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = client.post(url, data=big, headers=auth("bob"), content_type="application/json")
    assert response.status_code == 413
    contract.check(response, "POST", url)


@pytest.mark.parametrize(
    "url",
    [
        "/admin/login",
        "/admin/logout",
        *(f"/admin/requests/ar-1/{action}" for action in ("approve", "reject", "revoke")),
    ],
)
def test_the_admin_forms_refusals_are_documented(client, contract, url):
    """A form post that is not URL-encoded (415) or is too large (413): HTML pages, as
    the document says."""
    response = client.post(url, data="{}", content_type="application/json")
    assert response.status_code == 415
    contract.check(response, "POST", url)
    response = client.post(
        url, data="reason=" + "x" * (2 * 1024 * 1024), content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 413
    contract.check(response, "POST", url)

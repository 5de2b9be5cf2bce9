"""Errors (API.md "Errors"): every error is `{"error": {"code", "message"}}` with its status,
never an HTML page, never a stack trace."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import json
import logging
import os
import shutil
import threading
from pathlib import Path

import peewee
import pytest

from models import CONNECTION_BOUNDS, Tenant, database, transaction
from tests.conftest import START, auth, read_check
from tests.helpers import corrupt_sqlite_file
from tests.postgres import drop_database, end_connections

HTML_MARKERS = ("<html", "<!doctype", "<title", "traceback", 'file "/')


def assert_error_body(answer, status: int) -> dict:
    text = answer.get_data(as_text=True)
    assert answer.status_code == status, text
    assert answer.mimetype == "application/json", answer.mimetype
    for marker in HTML_MARKERS:
        assert marker not in text.lower(), text
    body = answer.get_json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message"}, body
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    return error


# --- routing -------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/v1/nope", "/v1/decisions/single", "/nope", "/v1/", "/v2/decisions"])
def test_unknown_route_is_json_404(client, url):
    assert_error_body(client.get(url, headers=auth("ops")), 404)


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/v1//support-requests"),
        ("POST", "/v1//decisions"),
        ("PUT", "/v1/tenants/%2F/role-assignments"),
        ("PUT", "/v1/tenants//role-assignments"),
    ],
)
def test_a_doubled_slash_is_a_json_404_not_a_redirect_to_another_resource(client, method, url):
    answer = client.open(url, method=method, json={"principal": "x", "role": "y"}, headers=auth("ops"))
    assert_error_body(answer, 404)
    assert "Location" not in answer.headers


def test_unknown_route_without_token_is_still_json(client):
    answer = client.get("/v1/definitely-not-here")
    assert answer.status_code in (401, 404)
    assert_error_body(answer, answer.status_code)


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/v1/decisions"),
        ("DELETE", "/v1/decisions"),
        ("PUT", "/v1/decisions/batch"),
        ("DELETE", "/v1/policy"),
        ("PATCH", "/v1/tenants/contoso"),
    ],
)
def test_wrong_method_is_json_405(client, method, url):
    answer = client.open(url, method=method, headers=auth("diag-tool"))
    assert assert_error_body(answer, 405)["code"] == "method_not_allowed"
    assert answer.headers.get("Allow")


@pytest.mark.parametrize(
    ("url", "methods"),
    [("/v1/support-requests", {"GET", "POST"}), ("/v1/decisions", {"POST"}), ("/healthz", {"GET"})],
)
def test_options_says_the_methods_and_sends_no_body(client, url, methods):
    answer = client.options(url, headers=auth("ops"))
    assert answer.status_code == 204
    assert answer.data == b"" and "Content-Type" not in answer.headers
    assert methods <= {m.strip() for m in answer.headers["Allow"].split(",")}


# --- bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ('{"principal": "eve"}', "text/plain"),
        ("principal=eve&tenant_id=contoso", "application/x-www-form-urlencoded"),
        ("<check principal='eve'/>", "application/xml"),
        ("", None),
    ],
)
def test_non_json_body_is_415(client, data, content_type):
    headers = auth("diag-tool")
    answer = client.post("/v1/decisions", data=data, content_type=content_type, headers=headers)
    assert_error_body(answer, 415)


def test_a_non_json_body_is_415_on_actions_whose_body_may_be_left_out(api, client, ticket):
    """close, revoke and cancel take no body, but one sent must be JSON: a text/plain
    close is refused and the ticket stays open."""
    url = f"/v1/support-requests/{ticket['id']}/close"
    answer = client.post(url, data="{}", content_type="text/plain", headers=auth("bob"))
    assert assert_error_body(answer, 415)["code"] == "unsupported_media_type"
    assert api.get(f"/v1/support-requests/{ticket['id']}", "bob").get_json()["status"] == "open"


def test_invalid_json_is_400_saying_the_body_is_not_json(client):
    headers = auth("diag-tool")
    answer = client.post("/v1/decisions", data=b"{not json", content_type="application/json", headers=headers)
    assert answer.get_json()["error"] == {"code": "invalid_json", "message": "body: not valid JSON"}


def test_non_json_body_is_415_on_management_routes(client):
    answer = client.put("/v1/tenants/acme", data="name=Acme", content_type="text/plain", headers=auth("ops"))
    assert_error_body(answer, 415)


@pytest.mark.parametrize(
    ("url", "who", "body"),
    [
        ("/v1/decisions", "diag-tool", read_check()),  # the fast path
        ("/v1/decisions?via=flask", "diag-tool", read_check()),  # the reference path
        ("/v1/support-requests", "bob", {"tenant_id": "fabrikam", "title": "Sign-ins fail"}),
    ],
)
@pytest.mark.parametrize("coding", ["gzip", "br", "GZIP"])
def test_an_encoded_body_is_415_naming_the_coding_and_changes_nothing(api, url, who, body, coding):
    # Read as sent, a compressed body would be bytes that are not JSON; a plain body
    # labelled as compressed would be taken for something the client did not mean.
    raw = gzip.compress(json.dumps(body).encode()) if coding != "br" else json.dumps(body).encode()
    headers = {**auth(who), "Content-Encoding": coding}
    before = len(api.get("/v1/support-requests", "bob").get_json()["items"])

    answer = api.client.post(url, data=raw, content_type="application/json", headers=headers)

    error = assert_error_body(answer, 415)
    assert error["code"] == "unsupported_media_type"
    assert f"Content-Encoding: {coding}" in error["message"]
    assert len(api.get("/v1/support-requests", "bob").get_json()["items"]) == before


@pytest.mark.parametrize("url", ["/v1/decisions", "/v1/decisions?via=flask"])
def test_an_identity_content_encoding_is_a_plain_body(client, url):
    headers = {**auth("diag-tool"), "Content-Encoding": "identity"}
    answer = client.post(url, data=json.dumps(read_check()), content_type="application/json", headers=headers)
    assert answer.status_code == 200


@pytest.mark.parametrize("data", ['{"principal": "eve",', "{'principal': 'eve'}", "nul", "\xff\xfe"])
def test_invalid_json_is_400(client, data):
    headers = auth("diag-tool")
    answer = client.post("/v1/decisions", data=data, content_type="application/json", headers=headers)
    assert_error_body(answer, 400)


@pytest.mark.parametrize(
    ("url", "who", "data"),
    [
        ("/v1/decisions", "diag-tool", "null"),
        ("/v1/decisions", "diag-tool", "[]"),
        ("/v1/decisions/batch", "diag-tool", '"checks"'),
        ("/v1/support-requests", "bob", "null"),
        ("/v1/support-requests", "bob", "[1]"),
    ],
)
def test_json_that_is_not_an_object_is_400_saying_so(client, url, who, data):
    answer = client.post(url, data=data, content_type="application/json", headers=auth(who, "fabrikam"))
    error = assert_error_body(answer, 400)
    assert "must be a JSON object" in error["message"]


def _post_chunked(client, url: str, who: str, data: str, tenant: str = "provider"):
    """A chunked body has no Content-Length: the server reads it to its end and says so
    with wsgi.input_terminated, as granian and Werkzeug's server do."""
    return client.post(
        url,
        data=data,
        content_type="application/json",
        headers={**auth(who, tenant), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )


def test_chunked_bodies_are_read_on_every_route(client):
    answer = _post_chunked(client, "/v1/decisions", "diag-tool", json.dumps(read_check()))
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["reason"] == "no_active_grant"

    batch = json.dumps({"checks": [read_check(), read_check(action="write")]})
    answer = _post_chunked(client, "/v1/decisions/batch", "diag-tool", batch)
    assert answer.status_code == 200, answer.get_json()
    assert [r["reason"] for r in answer.get_json()["results"]] == ["no_active_grant", "read_only"]

    ticket = json.dumps({"tenant_id": "fabrikam", "title": "chunked"})
    answer = _post_chunked(client, "/v1/support-requests", "bob", ticket, "fabrikam")
    assert answer.status_code == 201, answer.get_json()


@pytest.mark.parametrize(("url", "who"), [("/v1/decisions", "diag-tool"), ("/v1/support-requests", "bob")])
def test_a_chunked_body_over_the_limit_is_413(app, client, url, who):
    padding = "x" * (app.config["MAX_CONTENT_LENGTH"] + 10)
    answer = _post_chunked(client, url, who, '{"title": "' + padding + '"}', "fabrikam")
    assert_error_body(answer, 413)


@pytest.mark.parametrize(
    ("url", "who", "body", "status"),
    [
        ("/v1/decisions", "diag-tool", read_check(), 200),  # the fast path
        ("/v1/decisions?ref=1", "diag-tool", read_check(), 200),  # the Flask route
        ("/v1/support-requests", "bob", {"tenant_id": "fabrikam", "title": "t"}, 201),
    ],
)
@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_of_exactly_the_limit_is_read_and_one_byte_more_is_413(
    app, client, url, who, body, status, chunked
):
    """API.md: 413 for a body larger than 2 MiB. Under granian (which ends the input
    stream itself: wsgi.input_terminated) a body of exactly 2 MiB got a 413 on the Flask
    routes: Werkzeug's stream, limited at 2 MiB, refuses any read at its limit."""
    text = json.dumps(body)
    exactly = text + " " * (app.config["MAX_CONTENT_LENGTH"] - len(text))
    for data, expected in ((exactly, status), (exactly + " ", 413)):
        overrides = {"wsgi.input_terminated": True}
        headers = auth(who, "fabrikam")
        if chunked:
            overrides["CONTENT_LENGTH"] = ""
            headers["Transfer-Encoding"] = "chunked"
        answer = client.post(
            url, data=data, content_type="application/json", headers=headers, environ_overrides=overrides
        )
        assert answer.status_code == expected, (len(data), answer.get_data(as_text=True)[:300])
        if expected == 413:
            assert_error_body(answer, 413)


# --- a body left unread by an error answer (service/unread_body.py) ----------------------


class ClientGone(io.RawIOBase):
    """A request body whose client went away while it was being sent."""

    def read(self, size=-1):
        raise ConnectionResetError("client gone")


def _post_unread(client, url: str, who: str | None, stream, length: int | None, media="text/plain"):
    """POST with `stream` as the body's input, as a server that ends the stream itself
    (granian: wsgi.input_terminated) hands it over; `length` None sends it chunked."""
    headers = auth(who, "fabrikam") if who else {}
    if length is None:
        headers["Transfer-Encoding"] = "chunked"
    overrides = {
        "wsgi.input": stream,
        "wsgi.input_terminated": True,
        "CONTENT_LENGTH": "" if length is None else str(length),
    }
    return client.post(url, content_type=media, headers=headers, environ_overrides=overrides)


@pytest.mark.parametrize("status", [415, 503])
def test_a_body_left_unread_by_an_error_is_read_to_its_end_for_a_caller_with_a_valid_token(
    app, client, status
):
    """Left in the socket, the body makes the server's close a reset, and the client meets
    a broken pipe instead of the error: a 4xx or a 5xx answered before the body is read."""

    def store_down():
        raise peewee.OperationalError("unable to open database file")

    app.add_url_rule("/v1/_test_store_down", "store_down", store_down, methods=["POST"])
    url, media = ("/v1/decisions/batch", "text/plain") if status == 415 else ("/v1/_test_store_down", None)
    data = b"x" * (3 * 1024 * 1024)
    stream = io.BytesIO(data)

    answer = _post_unread(client, url, "diag-tool", stream, len(data), media)

    assert_error_body(answer, status)
    assert stream.tell() == len(data)


def test_a_body_left_unread_is_not_read_for_a_caller_without_a_valid_token(client):
    """Reading has no time limit: a connection that sends headers and then nothing would
    hold a worker's thread, so only an authenticated caller's body is read."""
    data = b"x" * 1024
    stream = io.BytesIO(data)
    assert_error_body(_post_unread(client, "/v1/decisions/batch", None, stream, len(data)), 401)
    assert stream.tell() == 0


def test_a_declared_body_of_up_to_the_drain_limit_is_read_and_a_larger_one_is_left(client):
    """Past DRAIN_LIMIT the connection is cut instead: reading an attacker's gigabyte would
    cost more than a client that only overshot the 2 MiB limit loses."""
    from service.unread_body import DRAIN_LIMIT

    for length, read in ((DRAIN_LIMIT, DRAIN_LIMIT), (DRAIN_LIMIT + 1, 0)):
        stream = io.BytesIO(b"x" * length)
        answer = _post_unread(client, "/v1/decisions/batch", "diag-tool", stream, length)
        assert_error_body(answer, 415)
        assert stream.tell() == read, length


def test_a_chunked_body_left_unread_is_read_only_up_to_the_drain_limit(client):
    from service.unread_body import DRAIN_LIMIT

    stream = io.BytesIO(b"x" * (DRAIN_LIMIT + 1024 * 1024))
    assert_error_body(_post_unread(client, "/v1/decisions/batch", "diag-tool", stream, None), 415)
    assert stream.tell() == DRAIN_LIMIT


@pytest.mark.parametrize("length", [100, None])
def test_a_client_gone_while_its_unread_body_is_read_still_gets_the_error_answer(client, length):
    answer = _post_unread(client, "/v1/decisions/batch", "diag-tool", ClientGone(), length)
    assert assert_error_body(answer, 415)["code"] == "unsupported_media_type"


def test_an_action_whose_body_may_be_left_out_still_refuses_unknown_fields(api, ticket):
    url = f"/v1/support-requests/{ticket['id']}/close"
    answer = api.post(url, "bob", {"reason": "done"})
    error = assert_error_body(answer, 400)
    assert "reason" in error["message"]
    answer = _post_chunked(api.client, url, "bob", json.dumps({"reason": "done"}), "fabrikam")
    assert "reason" in assert_error_body(answer, 400)["message"]
    assert api.post(url, "bob").status_code == 200  # no body at all


@pytest.mark.parametrize(
    ("url", "who", "body", "field"),
    [
        ("/v1/support-requests", "bob", {"tenant_id": "fabrikam", "title": "a\u0000b"}, "title"),
        ("/v1/support-requests", "bob", {"tenant_id": "fab\u0000rikam", "title": "t"}, "tenant_id"),
        (
            "/v1/tenants/acme/role-assignments",
            "ops",
            {"principal": "x\u0000", "role": "Global Reader"},
            "principal",
        ),
    ],
)
def test_a_nul_character_in_a_body_is_400_naming_the_field(client, url, who, body, field):
    method = client.put if "role-assignments" in url else client.post
    client.put("/v1/tenants/acme", json={"name": "Acme"}, headers=auth("ops"))
    answer = method(url, json=body, headers=auth(who, "fabrikam"))
    error = assert_error_body(answer, 400)
    assert error["message"].startswith(f"{field}: must not contain a NUL")


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/v1/support-requests/a%00b"),
        ("PUT", "/v1/tenants/a%00b"),
        ("GET", "/v1/access-requests?tenant_id=fab%00rikam"),
        ("GET", "/v1/audit-events?tenant_id=fabrikam&activity=x%00"),
    ],
)
def test_a_nul_character_in_a_url_is_400(client, method, url):
    body = {"name": "A"} if method == "PUT" else None
    answer = client.open(url, method=method, json=body, headers=auth("ops"))
    assert_error_body(answer, 400)


@pytest.mark.parametrize(
    ("method", "path", "query", "named"),
    [
        # PATH_INFO as WSGI passes it: the URL's decoded bytes as latin-1 (b"\x80" is "\x80")
        ("PUT", "/v1/tenants/x\x80", "", "path"),
        ("PUT", "/v1/tenants/x\xff/role-assignments", "", "path"),
        ("GET", "/v1/support-requests/x\xc3", "", "path"),
        ("GET", "/v1/access-requests", "tenant_id=x%FE", "tenant_id"),
        ("GET", "/v1/audit-events", "tenant_id=fabrikam&activity=%ff", "activity"),
    ],
)
def test_a_url_whose_bytes_are_not_utf8_is_400_and_changes_nothing(client, method, path, query, named):
    """Werkzeug would decode x%80 and x%FF both to 'x\ufffd', one tenant for two ids."""
    body = {"principal": "m", "role": "Global Administrator"} if "role-assignments" in path else {"name": "A"}
    answer = client.open(
        "/",
        method=method,
        json=body if method == "PUT" else None,
        query_string=query,
        headers=auth("ops"),
        environ_overrides={"PATH_INFO": path},
    )
    error = assert_error_body(answer, 400)
    assert error["message"] == f"{named}: not valid UTF-8"
    with database.connection_context():
        assert not [tenant.id for tenant in Tenant.select() if "\ufffd" in tenant.id]


@pytest.mark.parametrize("escaped", ["zz%80", "zz%FF", "zz%C3"])
def test_a_percent_escaped_path_that_is_not_utf8_is_400_under_the_development_server(app, escaped):
    """Werkzeug's development server (`flask run`) decodes the path itself, replacing what
    is not UTF-8, before the app sees it: the request target as sent still shows it."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        body = json.dumps({"name": "Z"})
        headers = {**auth("ops"), "Content-Type": "application/json"}
        connection.request("PUT", f"/v1/tenants/{escaped}", body=body, headers=headers)
        answer = connection.getresponse()
        error = json.loads(answer.read())["error"]
        assert (answer.status, error["message"]) == (400, "path: not valid UTF-8")
    finally:
        server.shutdown()
    with app.app_context(), database.connection_context():
        assert not [tenant.id for tenant in Tenant.select() if tenant.id.startswith("zz")]


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("/v1/support-requests/a%00b", None),
        ("/v1/audit-events?tenant_id=fab%00rikam", None),
        ("/", "/v1/support-requests/x\xff"),
    ],
)
def test_a_bad_url_without_a_valid_token_is_a_401_not_a_400(client, url, path):
    """Every /v1 call is authenticated first: a caller without a token learns nothing,
    not even how its URL was read."""
    overrides = {"PATH_INFO": path} if path else {}
    answer = client.get(url, environ_overrides=overrides)
    assert assert_error_body(answer, 401)["code"] == "missing_token"


def test_a_url_with_valid_utf8_beyond_ascii_still_works(api):
    tenant = "m\u00fcller-\u6771\u4eac"  # sent percent-encoded, as UTF-8
    answer = api.put(f"/v1/tenants/{tenant}", "ops", {"name": "M"})
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["id"] == tenant
    assert api.get(f"/v1/access-requests?tenant_id={tenant}", "ops").status_code == 200


@pytest.mark.parametrize(
    ("url", "who", "body", "field"),
    [
        ("/v1/tenants/newt", "ops", {"name": "NEST"}, "name"),
        ("/v1/support-requests", "bob", {"tenant_id": "fabrikam", "title": "NEST"}, "title"),
        ("/v1/decisions/batch", "diag-tool", {"checks": ["NEST"]}, "checks[0]"),
        ("/v1/decisions", "diag-tool", read_check(principal="NEST"), "principal"),
    ],
)
def test_a_value_nested_past_the_recursion_limit_is_400_naming_the_field(client, url, who, body, field):
    """orjson reads JSON nested up to 1,024 levels; Python's recursion stops at 1,000."""
    nested = "[" * 1020 + "]" * 1020
    data = json.dumps(body).replace('"NEST"', nested)
    method = "PUT" if url.startswith("/v1/tenants") else "POST"
    headers = {**(auth(who, "fabrikam") if who == "bob" else auth(who)), "Content-Type": "application/json"}
    answer = client.open(url, method=method, data=data, headers=headers)
    error = assert_error_body(answer, 400)
    assert error["message"].startswith(f"{field}"), error["message"]


def test_a_batch_far_over_its_size_is_refused_for_its_size(client):
    """A 2 MB body of a million bad checks: the first problem is the count."""
    data = '{"checks": [' + ",".join(["1"] * 1_000_000) + "]}"
    headers = {**auth("diag-tool"), "Content-Type": "application/json"}
    answer = client.post("/v1/decisions/batch", data=data, headers=headers)
    error = assert_error_body(answer, 400)
    assert error["message"] == "checks: must have at most 1000 items", error["message"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=%C2%B2",  # "²": a digit to str.isdigit, not to int()
        "limit=%D9%A3",  # Arabic-Indic three
        "since=0001-01-01T00:00:00%2B01:00",  # before year 1 in UTC
        "since=9999-12-31T23:59:59-00:01",  # after year 9999 in UTC
    ],
)
def test_odd_query_values_are_400(client, query):
    answer = client.get(f"/v1/audit-events?tenant_id=contoso&{query}", headers=auth("alice"))
    assert assert_error_body(answer, 400)["code"] == "invalid_query"


def test_audit_limit_takes_one_to_its_maximum_and_nothing_outside(client):
    from service.api.audit import DEFAULT_LIMIT

    for limit, status in ((1, 200), (DEFAULT_LIMIT, 200), (0, 400), (DEFAULT_LIMIT + 1, 400)):
        answer = client.get(f"/v1/audit-events?tenant_id=contoso&limit={limit}", headers=auth("alice"))
        assert answer.status_code == status, (limit, answer.get_json())
        if status == 400:
            assert assert_error_body(answer, 400)["code"] == "invalid_query"


def test_audit_activity_takes_as_many_different_values_as_its_maximum(client):
    from service.api.audit import MAX_ACTIVITIES

    query = "&".join(f"activity=made.up{n}" for n in range(MAX_ACTIVITIES))
    answer = client.get(f"/v1/audit-events?tenant_id=contoso&{query}", headers=auth("alice"))
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["items"] == []


def test_an_empty_activity_filter_is_no_filter(client):
    """`activity=` (a form's empty field) names no activity: the whole view, not none of it."""
    everything = client.get("/v1/audit-events?tenant_id=contoso", headers=auth("alice")).get_json()["items"]
    assert everything  # the directory import
    answer = client.get("/v1/audit-events?tenant_id=contoso&activity=", headers=auth("alice"))
    assert answer.status_code == 200 and answer.get_json()["items"] == everything


def test_since_takes_a_lower_case_z_as_utc(client):
    """RFC 3339 allows `z` for `Z`; the same time either way."""
    url = "/v1/audit-events?tenant_id=contoso&since="
    upper = client.get(url + "2026-11-02T08:00:00Z", headers=auth("alice"))
    lower = client.get(url + "2026-11-02T08:00:00z", headers=auth("alice"))
    assert upper.status_code == lower.status_code == 200, lower.get_json()
    assert lower.get_json()["items"] == upper.get_json()["items"] != []


def test_an_odd_content_length_on_the_decision_fast_path_is_not_a_500(client):
    answer = client.post(
        "/v1/decisions",
        data=json.dumps(read_check()),
        headers={**auth("diag-tool"), "Content-Type": "application/json"},
        environ_overrides={"CONTENT_LENGTH": "\u00b2"},
    )
    # Werkzeug reads no body for a Content-Length it cannot parse: the check is empty.
    assert assert_error_body(answer, 400)["code"] == "invalid_field"


def test_werkzeug_errors_met_on_the_fast_path_keep_their_status():
    """e.g. a malformed chunked body, which the development server reports while the
    decision fast path reads it: a 400, as Flask's routes give."""
    from werkzeug.exceptions import ClientDisconnected

    from service.errors_http import error_for

    status, code, message = error_for(ClientDisconnected())
    assert (status, code) == (400, "bad_request") and message


def test_empty_json_body_is_400_naming_a_required_field(client):
    headers = auth("diag-tool")
    answer = client.post("/v1/decisions", data="", content_type="application/json", headers=headers)
    error = assert_error_body(answer, 400)
    assert "principal" in error["message"]


def test_json_charset_parameter_is_accepted(client):
    answer = client.post(
        "/v1/decisions",
        data=json.dumps(read_check()),
        content_type="application/json; charset=utf-8",
        headers=auth("diag-tool"),
    )
    assert answer.status_code == 200, answer.get_json()


def test_body_too_large_is_413(app, client):
    assert app.config["MAX_CONTENT_LENGTH"] == 2 * 1024 * 1024
    padding = "x" * (app.config["MAX_CONTENT_LENGTH"] + 10)
    body = '{"principal": "' + padding + '", "tenant_id": "contoso"}'
    answer = client.post(
        "/v1/decisions", data=body, content_type="application/json", headers=auth("diag-tool")
    )
    assert assert_error_body(answer, 413)["code"] == "body_too_large"  # openapi.yaml
    answer = client.post(  # a Flask route, not the decision fast path
        "/v1/support-requests", data=body, content_type="application/json", headers=auth("bob")
    )
    assert assert_error_body(answer, 413)["code"] == "body_too_large"


def test_body_just_under_the_limit_is_not_413(app, client):
    body = json.dumps(read_check())
    data = body + " " * (app.config["MAX_CONTENT_LENGTH"] - len(body) - 1)
    answer = client.post(
        "/v1/decisions", data=data, content_type="application/json", headers=auth("diag-tool")
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]


# --- null: an optional field left out ---------------------------------------------------


def test_null_optional_fields_of_a_decision_are_left_out(api, approved_request):
    nulls = {"support_request_id": None, "explain": None}
    single = api.post("/v1/decisions", "diag-tool", read_check(**nulls))
    assert single.status_code == 200, single.get_json()
    assert single.get_json()["allowed"] is True and "explain" not in single.get_json()
    batch = api.post("/v1/decisions/batch", "diag-tool", {"checks": [read_check(**nulls), read_check()]})
    assert [r["reason"] for r in batch.get_json()["results"]] == ["granted", "granted"]


def test_null_optional_fields_of_a_ticket_and_a_rejection_take_their_defaults(api):
    body = {
        "tenant_id": "fabrikam",
        "title": "t",
        "resource_tenant_id": None,
        "allow_advanced_diagnostics": None,
    }
    ticket = api.post("/v1/support-requests", "bob", body)
    assert ticket.status_code == 201, ticket.get_json()
    assert (ticket.get_json()["resource_tenant_id"], ticket.get_json()["allow_advanced_diagnostics"]) == (
        "fabrikam",
        False,
    )
    ticket_id = ticket.get_json()["id"]
    assert api.post(f"/v1/support-requests/{ticket_id}/assign", "eve", {"engineer": "eve"}).status_code == 200
    body = {"support_request_id": ticket_id, "justification": "j"}
    request_id = api.post("/v1/access-requests", "eve", body).get_json()["id"]
    answer = api.post(
        f"/v1/access-requests/{request_id}/reject", "bob", {"tenant_id": "fabrikam", "reason": None}
    )
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["rejection_reason"] == ""


@pytest.mark.parametrize(
    ("url", "who", "body", "field"),
    [
        ("/v1/decisions", "diag-tool", read_check(tenant_id=None), "tenant_id"),
        ("/v1/decisions/batch", "diag-tool", {"checks": [read_check(action=None)]}, "checks[0].action"),
        ("/v1/support-requests", "bob", {"tenant_id": "fabrikam", "title": None}, "title"),
    ],
)
def test_a_null_required_field_is_still_400_naming_it(client, url, who, body, field):
    answer = client.post(url, json=body, headers=auth(who, "fabrikam"))
    error = assert_error_body(answer, 400)
    assert error["message"].startswith(f"{field}: "), error["message"]


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/v1/decisions", read_check(action="read\n"), "action"),
        ("/v1/decisions/batch", {"checks": [read_check(), read_check(action="read\n")]}, "checks[1].action"),
    ],
)
def test_a_trailing_newline_breaks_a_pattern_and_the_error_names_the_field(client, url, body, field):
    # A schema pattern's `$` ends the string (JSON Schema: ECMA-262), not a line.
    answer = client.post(url, json=body, headers=auth("diag-tool"))
    error = assert_error_body(answer, 400)
    assert error["code"] == "invalid_field"
    assert error["message"].startswith(f"{field}: "), error["message"]
    assert "expected form" in error["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"title": "Acme"}, "title: unknown field"),  # an unknown field is named before a missing one
        ({}, "name: missing required field"),
        ({"name": 7}, "name: must be of type string"),
    ],
)
def test_validation_error_names_the_field(client, body, message):
    answer = client.put("/v1/tenants/acme", json=body, headers=auth("ops"))
    error = assert_error_body(answer, 400)
    assert error["message"] == message


@pytest.mark.parametrize("url", ["/v1/decisions", "/v1/decisions?via=flask"])
def test_a_type_error_names_the_types_in_words(client, url):
    # A nullable field's types are a list in the schema: named as words, not as a Python list.
    answer = client.post(url, json=read_check(explain="yes"), headers=auth("diag-tool"))
    error = assert_error_body(answer, 400)
    assert error["message"] == "explain: must be of type boolean or null"


@pytest.mark.parametrize(
    ("method", "url", "who", "body", "status"),
    [
        ("GET", "/v1/policy", None, None, 401),
        ("GET", "/v1/policy", "eve", None, 403),
        ("GET", "/v1/support-requests/sr-missing", "alice", None, 404),
        ("GET", "/v1/access-requests/ar-missing", "alice", None, 404),
        ("GET", "/v1/audit-events?tenant_id=contoso", "nina", None, 404),
        ("GET", "/v1/audit-events", "alice", None, 400),
        ("GET", "/v1/audit-events?tenant_id=contoso&since=yesterday", "alice", None, 400),
        ("POST", "/v1/decisions", "diag-tool", {"principal": "eve"}, 400),
        ("POST", "/v1/support-requests", "alice", {"tenant_id": "contoso"}, 400),
        ("POST", "/v1/support-requests", "carol", {"tenant_id": "contoso", "title": "x"}, 403),
        ("DELETE", "/v1/tenants/contoso/role-assignments/zed/Global Administrator", "ops", None, 404),
    ],
)
def test_error_statuses_share_one_shape(api, method, url, who, body, status):
    assert_error_body(api.call(method, url, who, body), status)


def test_conflict_is_409_with_the_error_shape(api, approved_request):
    url = f"/v1/access-requests/{approved_request['id']}/approve"
    assert_error_body(api.post(url, "alice", {"tenant_id": "contoso"}), 409)


def test_unexpected_exception_is_json_500_without_traceback(app, client):
    def explode():
        raise RuntimeError("secret internals /etc/passwd")

    app.add_url_rule("/v1/_test_explode", "explode", explode)
    answer = client.get("/v1/_test_explode", headers=auth("ops"))
    error = assert_error_body(answer, 500)
    assert "secret internals" not in error["message"]


def test_an_unexpected_exception_goes_to_the_service_log_with_its_trace(app, client, caplog):
    """The 500 says "see the service log": what happened must be there, for the operator."""
    caplog.set_level(logging.ERROR, logger="support_access")

    def explode():
        raise RuntimeError("what went wrong in here")

    app.add_url_rule("/v1/_test_explode", "explode", explode)
    assert_error_body(client.get("/v1/_test_explode", headers=auth("ops")), 500)
    logged = [r for r in caplog.records if r.name == "support_access" and r.levelno == logging.ERROR]
    assert logged and logged[-1].exc_info, [r.getMessage() for r in caplog.records]
    assert "what went wrong in here" in str(logged[-1].exc_info[1])


def test_a_store_failure_goes_to_the_service_log_with_its_cause(app, client, caplog):
    """The 503 tells the caller only that the store is unavailable; the operator's log
    says why."""
    caplog.set_level(logging.ERROR, logger="support_access")

    def fail():
        raise peewee.OperationalError("disk I/O error on the store")

    app.add_url_rule("/v1/_test_store_error", "store_error", fail)
    answer = client.get("/v1/_test_store_error", headers=auth("ops"))
    assert assert_error_body(answer, 503)["code"] == "store_unavailable"
    messages = [r.getMessage() for r in caplog.records if r.name == "support_access"]
    assert any("disk I/O error on the store" in m for m in messages), messages


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (peewee.DatabaseError("file is not a database"), 503, "store_unavailable"),
        (peewee.OperationalError("unable to open database file"), 503, "store_unavailable"),
        (peewee.InterfaceError("connection already closed"), 503, "store_unavailable"),
        (peewee.InternalError("current transaction is aborted"), 503, "store_unavailable"),
        (peewee.IntegrityError("UNIQUE constraint failed"), 500, "internal_error"),
        (peewee.DataError("value too long"), 500, "internal_error"),
        (peewee.ProgrammingError("no such column"), 500, "internal_error"),
        (peewee.NotSupportedError("not supported"), 500, "internal_error"),
    ],
)
def test_the_store_failing_is_503_and_a_bad_statement_500(app, client, error, status, code):
    """The store failing as such is unavailable; peewee's errors about our statements or
    data are bugs of ours."""

    def fail():
        raise error

    app.add_url_rule("/v1/_test_store_error", "store_error", fail)
    answer = client.get("/v1/_test_store_error", headers=auth("ops"))
    assert assert_error_body(answer, status)["code"] == code
    assert str(error) not in answer.get_data(as_text=True)


@pytest.mark.parametrize("kind", ["OperationalError", "InterfaceError"])
def test_a_connection_lost_in_the_audit_logs_sql_is_503_and_writes_nothing(app, api, monkeypatch, kind):
    """The audit log's inserts go through a raw cursor, whose errors are the driver's
    (psycopg2's, sqlite3's): a connection lost there is a 503, as in any other query."""
    import sqlite3

    import psycopg2

    from models import is_sqlite
    from service import audit

    driver = sqlite3 if is_sqlite(database.obj) else psycopg2
    error = getattr(driver, kind)("server closed the connection unexpectedly")

    def lost(*_):
        raise error

    monkeypatch.setattr(audit, "_insert_all_sqlite" if driver is sqlite3 else "_insert_all_postgres", lost)
    answer = api.post("/v1/support-requests", "bob", {"tenant_id": "fabrikam", "title": "Lost"})

    assert assert_error_body(answer, 503)["code"] == "store_unavailable"
    monkeypatch.undo()
    assert api.get("/v1/support-requests", "bob").get_json()["items"] == []


# --- the store is down --------------------------------------------------------------------


def break_store(app, tmp_path: Path) -> None:
    """Take the store away: replace the SQLite file by a directory, so opening it fails,
    or drop the PostgreSQL database."""
    if not database.is_closed():
        database.close()
    url = app.config["DATABASE_URL"]
    if not url.startswith("sqlite"):
        drop_database(url)
        return
    assert url.endswith(str(tmp_path / "test.db"))
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = tmp_path / f"test.db{suffix}"
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (tmp_path / "test.db").mkdir()


def test_store_unavailable_is_503(app, api, tmp_path):
    break_store(app, tmp_path)
    error = assert_error_body(api.get("/v1/support-requests", "alice"), 503)
    assert error["code"]
    assert_error_body(api.get("/v1/access-requests?tenant_id=contoso", "alice"), 503)
    assert_error_body(api.get("/v1/audit-events?tenant_id=contoso", "alice"), 503)
    assert_error_body(api.put("/v1/tenants/acme", "ops", {"name": "Acme"}), 503)


def assert_not_an_allow(answer) -> None:
    """SPEC §6: with the store down a decision is a deny or an error status, never an allow."""
    if answer.status_code == 200:
        body = answer.get_json()
        results = body.get("results", [body])
        assert all(result["allowed"] is False for result in results), body
    else:
        assert_error_body(answer, 503)


def test_store_unavailable_is_never_an_allow(app, api, approved_request, tmp_path, monkeypatch):
    assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is True
    # Allowed reads go to the read journal, which checks the store every few
    # milliseconds (service/read_journal.py); here on every write.
    monkeypatch.setattr("service.read_journal.CHECK_INTERVAL", 0.0)
    break_store(app, tmp_path)
    assert_not_an_allow(api.post("/v1/decisions", "diag-tool", read_check()))
    assert_not_an_allow(api.post("/v1/decisions/batch", "diag-tool", {"checks": [read_check()] * 3}))


def test_readyz_reports_store_down(app, client, tmp_path):
    assert client.get("/readyz").status_code == 200
    break_store(app, tmp_path)
    answer = client.get("/readyz")
    assert_error_body(answer, 503)


on_postgres = pytest.mark.skipif(
    not os.environ.get("SUPPORT_ACCESS_TEST_POSTGRES"),
    reason="needs a PostgreSQL server (the PostgreSQL pass of make test, tests/postgres.sh)",
)


@on_postgres
def test_a_connection_the_server_ended_is_replaced_not_used_again(app, api, approved_request):
    """A PostgreSQL restart or failover ends every connection. The call that meets the loss
    is a 503; the next ones open a new connection (they failed until a restart before)."""
    url = f"/v1/access-requests/{approved_request['id']}"
    assert api.get(url, "alice").status_code == 200
    end_connections(app.config["DATABASE_URL"])
    statuses = [api.get(url, "alice").status_code for _ in range(3)]
    assert statuses[0] in (200, 503) and statuses[1:] == [200, 200], statuses
    assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is True
    revoked = api.post(f"{url}/revoke", "alice")  # a write transaction works again too
    assert revoked.status_code == 200, revoked.get_json()
    assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is False


@on_postgres
def test_a_connection_replaced_within_a_connection_context_ends_it_cleanly(app):
    """The importer's run and every CLI command hold one: a connection lost and replaced
    inside it left it nothing to pop on exit (an IndexError in place of their own end)."""
    with app.app_context(), database.connection_context():  # a statement meets the loss
        assert Tenant.select().count() > 0
        end_connections(app.config["DATABASE_URL"])
        with contextlib.suppress(peewee.OperationalError, peewee.InterfaceError):
            Tenant.select().count()  # may fail
        assert Tenant.select().count() > 0  # on a new connection
    assert database.is_closed()
    with app.app_context(), database.connection_context():  # a transaction meets it (an import round)
        with contextlib.suppress(peewee.OperationalError, peewee.InterfaceError), transaction():
            assert Tenant.select().count() > 0
            end_connections(app.config["DATABASE_URL"])
            Tenant.select().count()  # fails; the rollback drops the connection
        with transaction():
            assert Tenant.select().count() > 0  # the next round, on a new connection
    assert database.is_closed()


@on_postgres
def test_a_failed_statement_keeps_its_connection_and_waits_are_bounded(app):
    """Only a connection the server ended is replaced: an SQL error in a transaction is
    cleared by its ROLLBACK on the same connection. And every connection bounds its waits,
    so a server that is gone ends a reconnect in seconds."""
    with app.app_context():
        backend = database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        with pytest.raises(peewee.IntegrityError), transaction():
            Tenant.create(id="contoso", name="Contoso, again", created_at=START)
        assert database.execute_sql("SELECT pg_backend_pid()").fetchone()[0] == backend
        assert database.obj.connect_params["connect_timeout"] == CONNECTION_BOUNDS["connect_timeout"]
        assert database.obj.connect_params["keepalives"] == 1


def test_healthz_stays_up_when_store_is_down(app, client, tmp_path):
    """API.md: /healthz answers 200 once the process is up; only /readyz depends on the store."""
    break_store(app, tmp_path)
    assert client.get("/healthz").status_code == 200


# --- the store is corrupt ---------------------------------------------------------------


@pytest.fixture
def corrupt_store(app, database_url, tmp_path):
    """Overwrites the running app's SQLite header: the store fails as such (sqlite3's
    bare DatabaseError, not an OperationalError), which is as unavailable as a store that
    cannot be reached."""
    if not database_url.startswith("sqlite"):
        pytest.skip("overwrites a SQLite file")

    def corrupt() -> None:
        database.close()  # the next query opens the file again, as a new worker thread would
        corrupt_sqlite_file(tmp_path / "test.db")

    return corrupt


def test_a_corrupt_store_is_503_store_unavailable(api, client, approved_request, corrupt_store):
    corrupt_store()
    for answer in (
        api.get("/v1/audit-events?tenant_id=contoso", "alice"),
        api.get("/v1/support-requests", "alice"),
        api.post(f"/v1/access-requests/{approved_request['id']}/revoke", "alice"),
    ):
        assert assert_error_body(answer, 503)["code"] == "store_unavailable"
    assert assert_error_body(client.get("/readyz"), 503)["code"] == "not_ready"
    assert client.get("/healthz").status_code == 200


def test_a_corrupt_store_refuses_allowed_reads_until_it_is_back(
    api, approved_request, corrupt_store, monkeypatch
):
    """The read journal checks the store every CHECK_INTERVAL; once a check found it
    failed, every allowed read is refused (and checks again) until it is back. A corrupt
    file used to be a 500 at the check and then an allow until the next one was due."""
    monkeypatch.setattr("service.read_journal.CHECK_INTERVAL", 0.0)
    assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is True
    corrupt_store()
    checked = api.post("/v1/decisions", "diag-tool", read_check())
    assert assert_error_body(checked, 503)["code"] == "store_unavailable"

    monkeypatch.setattr("service.read_journal.CHECK_INTERVAL", 3600.0)  # no check falls due
    for answer in (
        api.post("/v1/decisions", "diag-tool", read_check()),
        api.post("/v1/decisions/batch", "diag-tool", {"checks": [read_check()] * 3}),
    ):
        assert assert_error_body(answer, 503)["code"] == "store_unavailable"

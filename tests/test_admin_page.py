"""The admin web page (SPEC §7): sign-in with a bearer token, pending requests with approve
and reject, approved access with "Remove access", the visibility rules of SPEC §5, CSRF,
errors as messages (never a stack trace) and HTML escaping."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import peewee
import pytest

from service import create_app, workflow
from service.admin import SECURITY_HEADERS
from service.errors import ConfigError
from tests.conftest import SECRET, token
from tests.helpers import copy_policies, edit

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """One admin's browser: its own cookie jar (test client), forms posted with the page's
    CSRF token, redirects followed like a browser does."""

    def __init__(self, app, who: str | None = None, tenant: str = "provider"):
        self.client = app.test_client()
        if who:
            answer = self.sign_in(token(who, tenant))
            assert answer.status_code == 302, answer.get_data(as_text=True)
            assert answer.headers["Location"] == "/admin"

    def sign_in(self, bearer: str):
        csrf = self.csrf("/admin/login")
        return self.client.post("/admin/login", data={"token": bearer, "csrf_token": csrf})

    def csrf(self, url: str = "/admin") -> str:
        page = self.client.get(url)
        assert page.status_code == 200, page.status_code
        return CSRF_FIELD.search(page.get_data(as_text=True)).group(1)

    def page(self) -> str:
        answer = self.client.get("/admin")
        assert answer.status_code == 200, answer.status_code
        assert answer.mimetype == "text/html"
        return answer.get_data(as_text=True)

    def post(self, url: str, **fields):
        """Post a form from the page; answers the page shown after the redirect."""
        fields.setdefault("csrf_token", self.csrf())
        answer = self.client.post(url, data=fields)
        assert answer.status_code == 302, answer.get_data(as_text=True)
        assert answer.headers["Location"] == "/admin"
        return self.page()

    def act(self, request_id: str, action: str, **fields) -> str:
        return self.post(f"/admin/requests/{request_id}/{action}", **fields)

    def session(self) -> dict:
        with self.client.session_transaction("/admin") as session:
            return dict(session)


def status_for(api, request_id: str, who: str, tenant_id: str) -> str:
    answer = api.get(f"/v1/access-requests/{request_id}?tenant_id={tenant_id}", who)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["status"]


def assert_no_trace(text: str) -> None:
    lowered = text.lower()
    assert "traceback" not in lowered and 'file "/' not in lowered, text


# --- signing in ------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
def test_a_form_over_the_size_limit_is_413_and_one_at_it_is_read(app, chunked):
    """A chunked form past 2 MiB under granian (which ends the stream itself) was read
    cut at 2 MiB and parsed so; the API's routes answer 413, and so does the page."""
    browser = Browser(app)
    fields = f"csrf_token={browser.csrf('/admin/login')}&token=x&padding="
    limit = app.config["MAX_CONTENT_LENGTH"]
    overrides = {"wsgi.input_terminated": True}
    headers = {}
    if chunked:
        overrides["CONTENT_LENGTH"] = ""
        headers["Transfer-Encoding"] = "chunked"
    for size, expected in ((limit, 401), (limit + 1, 413)):  # 401: read whole, the token then refused
        answer = browser.client.post(
            "/admin/login",
            data=fields + "a" * (size - len(fields)),
            content_type="application/x-www-form-urlencoded",
            headers=headers,
            environ_overrides=overrides,
        )
        assert answer.status_code == expected, (size, answer.get_data(as_text=True)[:300])
        assert_no_trace(answer.get_data(as_text=True))


def test_not_signed_in_goes_to_the_login_form(client):
    answer = client.get("/admin")
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/login"
    form = client.get("/admin/login")
    assert form.status_code == 200 and form.mimetype == "text/html"
    assert 'name="token"' in form.get_data(as_text=True)


def test_sign_in_shows_the_pending_request_to_both_tenants_admins(app, access_request):
    for who, tenant, party in [
        ("alice", "contoso", "the resource tenant"),
        ("bob", "fabrikam", "the support request tenant"),
    ]:
        browser = Browser(app, who, tenant)
        page = browser.page()
        assert access_request["id"] in page
        assert "sign-ins fail" in page and "read sign-in logs" in page
        assert f"Approve for {tenant}" in page
        assert f'name="tenant_id" value="{tenant}"' in page
        assert party in page
        assert f"Signed in as <strong>{who}</strong>" in page


def test_session_cookie_is_httponly_samesite_lax_and_only_for_the_page(app):
    browser = Browser(app)
    answer = browser.sign_in(token("alice", "contoso"))
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "; Path=/admin" in cookie  # not sent to the API or to other apps of the host
    assert answer.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


def test_session_cookie_is_secure_when_the_page_is_served_over_https(app):
    client = app.test_client()
    https = "https://localhost"
    page = client.get("/admin/login", base_url=https).get_data(as_text=True)
    fields = {"token": token("alice", "contoso"), "csrf_token": CSRF_FIELD.search(page).group(1)}
    answer = client.post("/admin/login", data=fields, base_url=https)
    assert answer.status_code == 302, answer.get_data(as_text=True)
    assert "; Secure" in answer.headers["Set-Cookie"]
    assert client.get("/admin", base_url=https).status_code == 200  # signed in
    plain = Browser(app).sign_in(token("alice", "contoso"))  # development over plain HTTP
    assert "Secure" not in plain.headers["Set-Cookie"]


@pytest.mark.parametrize(("value", "secure"), [("true", True), ("FALSE", False)])
def test_the_cookie_can_be_made_secure_behind_a_proxy_that_ends_tls(tmp_path, monkeypatch, value, secure):
    """There the page sees plain HTTP: SUPPORT_ACCESS_SECURE_COOKIE keeps the token off it."""
    settings = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}",
        "JWT_SECRET": SECRET,
        "POLICY_SNAPSHOT_DIR": str(tmp_path / "snapshot"),
        "READ_JOURNAL_DIR": str(tmp_path / "reads"),
        "DECISION_LOG": "",
        "SECURE_COOKIE": value,
    }
    for key, setting in settings.items():
        monkeypatch.setenv("SUPPORT_ACCESS_" + key, setting)
    answer = create_app().test_client().get("/admin/login")  # plain HTTP
    assert answer.status_code == 200
    assert ("; Secure" in answer.headers["Set-Cookie"]) is secure
    monkeypatch.setenv("SUPPORT_ACCESS_SECURE_COOKIE", "yes please")
    with pytest.raises(ConfigError, match="SUPPORT_ACCESS_SECURE_COOKIE"):
        create_app()


def test_bad_token_is_401_and_starts_no_session(app):
    browser = Browser(app)
    for bad in ["not-a-jwt", token("alice", "contoso", ttl=timedelta(seconds=-5)), ""]:
        answer = browser.sign_in(bad)
        assert answer.status_code == 401
        assert answer.mimetype == "text/html"
        assert "Sign-in failed" in answer.get_data(as_text=True)
        assert_no_trace(answer.get_data(as_text=True))
        assert "admin_token" not in browser.session()
    assert browser.client.get("/admin").status_code == 302


def test_a_pasted_bearer_prefix_is_accepted(app):
    browser = Browser(app)
    assert browser.sign_in("Bearer " + token("alice", "contoso")).status_code == 302
    assert browser.client.get("/admin").status_code == 200


def test_an_expired_stored_token_signs_out(app, access_request):
    browser = Browser(app, "alice", "contoso")
    with browser.client.session_transaction("/admin") as session:
        session["admin_token"] = token("alice", "contoso", ttl=timedelta(seconds=-1))
    answer = browser.client.get("/admin")
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/login"
    assert "admin_token" not in browser.session()
    assert "expired" in browser.client.get("/admin/login").get_data(as_text=True)


def test_sign_out(app):
    browser = Browser(app, "alice", "contoso")
    answer = browser.client.post("/admin/logout", data={"csrf_token": browser.csrf()})
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/login"
    assert "admin_token" not in browser.session()
    assert browser.client.get("/admin").status_code == 302


def test_sign_out_also_ends_a_session_cookie_set_for_the_whole_host(app):
    """Before the cookie moved to Path=/admin it was set for `/`; a browser holding such a
    cookie is signed out too, not signed back in once the page's own cookie is gone."""
    browser = Browser(app, "alice", "contoso")
    signed_in = browser.client.get_cookie("session", path="/admin")
    browser.client.set_cookie("session", signed_in.value, path="/")

    answer = browser.client.post("/admin/logout", data={"csrf_token": browser.csrf()})
    assert answer.status_code == 302
    assert "Signed out." in browser.client.get("/admin/login").get_data(as_text=True)  # the flash, read

    assert browser.client.get_cookie("session", path="/") is None
    assert browser.client.get("/admin").headers.get("Location") == "/admin/login"


def test_a_principal_without_tenants_sees_a_short_message(app, access_request):
    page = Browser(app, "eve").page()
    assert "no role that may manage support access" in page
    assert access_request["id"] not in page


# --- approving, rejecting, removing ------------------------------------------------------------


def test_approving_as_alice_then_bob_approves_the_request(app, api, access_request):
    request_id = access_request["id"]
    alice, bob = Browser(app, "alice", "contoso"), Browser(app, "bob", "fabrikam")

    page = alice.act(request_id, "approve", tenant_id="contoso")
    assert "approval on behalf of contoso is recorded" in page
    assert "contoso has given every approval it owes" in page
    # Approving or rejecting again on contoso's behalf would be a 409 (API.md): not offered.
    assert f"/admin/requests/{request_id}/approve" not in page
    assert f"/admin/requests/{request_id}/reject" not in page
    assert f"/admin/requests/{request_id}/reject" in bob.page()
    assert status_for(api, request_id, "alice", "contoso") == "pending"

    page = bob.act(request_id, "approve", tenant_id="fabrikam")
    assert f"Access request {request_id} is approved" in page
    assert status_for(api, request_id, "alice", "contoso") == "approved"
    assert status_for(api, request_id, "bob", "fabrikam") == "approved"
    events = api.get("/v1/audit-events?tenant_id=contoso", "alice").get_json()["items"]
    approvals = [e["actor"] for e in events if e["activity"] == "access_request.approval_added"]
    assert approvals == ["alice", "bob"]


class TestAPartyOfTwoApprovers:
    """workflow.yaml asking two approvals of the resource tenant: after one, its admins
    may still reject, and the one who approved is not offered to approve again."""

    @pytest.fixture
    def policy_dir(self, tmp_path):
        directory = copy_policies(tmp_path)
        one, two = "{party: resource, approvals: 1}", "{party: resource, approvals: 2}"
        edit(directory / "workflow.yaml", f"cross_tenant:\n      - {one}", f"cross_tenant:\n      - {two}")
        return directory

    def test_after_one_approval_the_party_may_still_reject(self, app, api, access_request):
        request_id = access_request["id"]
        alice = Browser(app, "alice", "contoso")

        page = alice.act(request_id, "approve", tenant_id="contoso")
        assert "You approved on behalf of contoso" in page
        assert f"/admin/requests/{request_id}/approve" not in page
        assert f"/admin/requests/{request_id}/approve" in Browser(app, "alice2", "contoso").page()

        page = alice.act(request_id, "reject", tenant_id="contoso")
        assert f"Access request {request_id} is rejected" in page
        assert status_for(api, request_id, "alice", "contoso") == "rejected"


def test_reject_with_a_reason(app, api, access_request):
    request_id = access_request["id"]
    page = Browser(app, "bob", "fabrikam").act(
        request_id, "reject", tenant_id="fabrikam", reason="not this week"
    )
    assert f"Access request {request_id} is rejected" in page
    assert "not this week" in page  # listed under the other requests, with the reason
    answer = api.get(f"/v1/access-requests/{request_id}", "alice").get_json()
    assert (answer["status"], answer["rejection_reason"]) == ("rejected", "not this week")


def test_alice_removes_approved_access_and_bob_never_sees_it(app, api, approved_request):
    request_id = approved_request["id"]
    alice = Browser(app, "alice", "contoso")
    page = alice.page()
    assert "Approved access to contoso" in page
    assert "Remove access" in page and f"/admin/requests/{request_id}/revoke" in page

    page = alice.act(request_id, "revoke")
    assert "Access removed" in page
    assert "Remove access" not in page
    assert status_for(api, request_id, "alice", "contoso") == "revoked"
    assert status_for(api, request_id, "bob", "fabrikam") == "approved"
    assert "revoked" in page  # the resource tenant sees what it did

    bob = Browser(app, "bob", "fabrikam")
    page = bob.page()
    assert request_id in page  # listed with the support request tenant's view ...
    assert "revoked" not in page.lower()  # ... which never shows the removal
    assert "Remove access" not in page and "/revoke" not in page


def test_bob_has_no_remove_button_and_cannot_remove(app, api, approved_request):
    request_id = approved_request["id"]
    bob = Browser(app, "bob", "fabrikam")
    page = bob.page()
    assert request_id in page and "approved" in page
    assert "Remove access" not in page and "/revoke" not in page
    assert "No one holds approved access to fabrikam" in page
    page = bob.act(request_id, "revoke")  # a crafted form post: refused like the API (404)
    assert f"access request &#39;{request_id}&#39; not found" in page
    assert status_for(api, request_id, "alice", "contoso") == "approved"


def test_unrelated_admin_sees_none_of_it_and_cannot_act(app, api, access_request):
    request_id = access_request["id"]
    nina = Browser(app, "nina", "northwind")
    page = nina.page()
    assert "Northwind Traders" in page
    assert request_id not in page and "sign-ins fail" not in page and "read sign-in logs" not in page
    page = nina.act(request_id, "approve", tenant_id="northwind")
    assert "not found" in page
    assert status_for(api, request_id, "alice", "contoso") == "pending"


def test_an_admin_of_both_tenants_acts_for_each(app, api, access_request):
    dana = Browser(app, "dana", "contoso")
    page = dana.page()
    assert "Approve for contoso" in page and "Approve for fabrikam" in page
    dana.act(access_request["id"], "approve", tenant_id="contoso")
    page = dana.act(access_request["id"], "approve", tenant_id="fabrikam")
    assert "is approved" in page
    assert status_for(api, access_request["id"], "alice", "contoso") == "approved"


# --- CSRF and errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("csrf", [None, "", "forged"])
def test_a_post_without_the_csrf_token_is_400_and_changes_nothing(app, api, access_request, csrf):
    alice = Browser(app, "alice", "contoso")
    data = {"tenant_id": "contoso"}
    if csrf is not None:
        data["csrf_token"] = csrf
    answer = alice.client.post(f"/admin/requests/{access_request['id']}/approve", data=data)
    assert answer.status_code == 400 and answer.mimetype == "text/html"
    assert_no_trace(answer.get_data(as_text=True))
    assert status_for(api, access_request["id"], "alice", "contoso") == "pending"
    assert api.get(f"/v1/access-requests/{access_request['id']}", "alice").get_json()["approvals"] == []


def test_login_form_needs_the_csrf_token_too(app):
    client = app.test_client()
    answer = client.post("/admin/login", data={"token": token("alice", "contoso")})
    assert answer.status_code == 400
    with client.session_transaction("/admin") as session:
        assert "admin_token" not in session


def test_approving_twice_is_a_message_not_an_error_page(app, api, access_request):
    alice = Browser(app, "alice", "contoso")
    alice.act(access_request["id"], "approve", tenant_id="contoso")
    page = alice.act(access_request["id"], "approve", tenant_id="contoso")  # 409 in the API
    assert f"Could not approve access request {access_request['id']}" in page
    assert "already approved" in page
    assert_no_trace(page)


def test_approving_a_finished_request_and_revoking_a_pending_one_are_messages(app, api, approved_request):
    alice = Browser(app, "alice", "contoso")
    page = alice.act(approved_request["id"], "approve", tenant_id="contoso")
    assert "the access request is approved" in page
    page = alice.act(approved_request["id"], "revoke")
    page = alice.act(approved_request["id"], "revoke")
    assert "the access request is revoked" in page
    assert_no_trace(page)


def test_the_engineer_cannot_approve_its_own_request_here_either(app, api, access_request):
    page = Browser(app, "eve").act(access_request["id"], "approve", tenant_id="contoso")
    assert "cannot approve or reject its own request" in page
    assert status_for(api, access_request["id"], "alice", "contoso") == "pending"


def test_an_engineer_who_is_also_an_admin_is_not_offered_its_own_request(app, api, access_request):
    """The page offers only what the workflow would allow: an admin never approves or
    rejects a request it filed itself."""
    body = {"principal": "eve", "role": "Global Administrator"}
    assert api.put("/v1/tenants/contoso/role-assignments", "ops", body).status_code == 201
    page = Browser(app, "eve").page()
    assert access_request["id"] in page
    assert "You filed this request: another admin of contoso approves or rejects it." in page
    assert "Approve for contoso" not in page and ">Reject<" not in page


def test_missing_tenant_is_400(app, access_request):
    alice = Browser(app, "alice", "contoso")
    url = f"/admin/requests/{access_request['id']}/approve"
    answer = alice.client.post(url, data={"csrf_token": alice.csrf()})
    assert answer.status_code == 400 and "tenant_id" in answer.get_data(as_text=True)


def test_the_tenant_a_form_names_is_taken_as_sent_not_trimmed(app, api, access_request):
    """Trimmed, ' contoso' would have been approved as contoso: the page acts for exactly
    the tenant its form names (the API refuses to create an id with a space at an end)."""
    alice = Browser(app, "alice", "contoso")
    page = alice.act(access_request["id"], "approve", tenant_id=" contoso")
    assert "approval on behalf of contoso is recorded" not in page
    assert api.get(f"/v1/access-requests/{access_request['id']}", "alice").get_json()["approvals"] == []


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("{id}%00/reject", {"tenant_id": "contoso"}),
        ("{id}/reject", {"tenant_id": "contoso", "reason": "no\u0000"}),
        ("{id}/approve", {"tenant_id": "con\u0000toso"}),
    ],
)
def test_a_nul_character_in_a_form_is_400_and_changes_nothing(app, api, access_request, path, fields):
    alice = Browser(app, "alice", "contoso")
    url = "/admin/requests/" + path.format(id=access_request["id"])
    answer = alice.client.post(url, data={**fields, "csrf_token": alice.csrf()})
    assert answer.status_code == 400 and "NUL" in answer.get_data(as_text=True)
    assert status_for(api, access_request["id"], "alice", "contoso") == "pending"


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("{id}\x80/reject", "tenant_id=contoso"),  # PATH_INFO as WSGI passes it: bytes as latin-1
        ("{id}/approve", "tenant_id=con%80toso"),
        ("{id}/reject", "tenant_id=contoso&reason=no%FF"),
    ],
)
def test_a_url_or_form_whose_bytes_are_not_utf8_is_400_and_changes_nothing(
    app, api, access_request, path, form
):
    alice = Browser(app, "alice", "contoso")
    answer = alice.client.post(
        "/",
        data=f"csrf_token={alice.csrf()}&{form}",
        content_type="application/x-www-form-urlencoded",
        environ_overrides={"PATH_INFO": "/admin/requests/" + path.format(id=access_request["id"])},
    )
    assert answer.status_code == 400 and "not valid UTF-8" in answer.get_data(as_text=True)
    assert status_for(api, access_request["id"], "alice", "contoso") == "pending"


def test_a_form_not_sent_url_encoded_is_refused_and_changes_nothing(app, api, access_request):
    """Werkzeug decodes multipart fields with errors="replace": b"no\\xff" would be stored
    as a reason the admin never gave. The page's own forms are all URL-encoded."""
    alice = Browser(app, "alice", "contoso")
    answer = alice.client.post(
        f"/admin/requests/{access_request['id']}/reject",
        data={"csrf_token": alice.csrf(), "tenant_id": "contoso", "reason": (io.BytesIO(b"no\xff"), "")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 415 and "URL-encoded" in answer.get_data(as_text=True)
    assert status_for(api, access_request["id"], "alice", "contoso") == "pending"


def test_an_unexpected_error_is_a_plain_500_page(app, access_request, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(workflow, "approve", boom)
    alice = Browser(app, "alice", "contoso")
    url = f"/admin/requests/{access_request['id']}/approve"
    answer = alice.client.post(url, data={"csrf_token": alice.csrf(), "tenant_id": "contoso"})
    text = answer.get_data(as_text=True)
    assert answer.status_code == 500 and answer.mimetype == "text/html"
    assert "Internal error" in text and "secret internals" not in text
    assert_no_trace(text)


@pytest.mark.parametrize(
    ("error", "status", "title"),
    [
        (peewee.DatabaseError("file is not a database"), 503, "The data store is unavailable"),
        (peewee.OperationalError("unable to open database file"), 503, "The data store is unavailable"),
        (peewee.IntegrityError("UNIQUE constraint failed"), 500, "Internal error"),
    ],
)
def test_the_store_failing_is_a_503_page_and_a_bad_statement_a_500(
    app, access_request, monkeypatch, error, status, title
):
    """The store failing as such (a corrupt file too) is unavailable; a statement of ours
    that fails is a bug."""

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(workflow, "approve", fail)
    alice = Browser(app, "alice", "contoso")
    url = f"/admin/requests/{access_request['id']}/approve"
    answer = alice.client.post(url, data={"csrf_token": alice.csrf(), "tenant_id": "contoso"})
    text = answer.get_data(as_text=True)
    assert answer.status_code == status and answer.mimetype == "text/html"
    assert title in text and str(error) not in text
    assert_no_trace(text)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/admin/nothing", 404),
        ("GET", "/admin/logout", 405),
        ("GET", "/admin/requests/x/approve", 405),
    ],
)
def test_a_path_of_the_page_that_no_route_takes_is_an_html_page(app, method, path, status):
    answer = app.test_client().open(path, method=method)
    text = answer.get_data(as_text=True)
    assert answer.status_code == status and answer.mimetype == "text/html", text
    assert_no_trace(text)
    if status == 405:
        assert answer.headers["Allow"]


def test_paths_beside_the_page_keep_json_errors(app):
    answer = app.test_client().get("/administrator")
    assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found"


# --- escaping ----------------------------------------------------------------------------------


def test_html_in_titles_and_justifications_is_escaped(app, api):
    body = {"tenant_id": "contoso", "title": "<script>alert('title')</script>"}
    ticket = api.post("/v1/support-requests", "alice", body).get_json()
    assert (
        api.post(f"/v1/support-requests/{ticket['id']}/assign", "eve", {"engineer": "eve"}).status_code == 200
    )
    body = {"support_request_id": ticket["id"], "justification": '<script>alert("why")</script><b>x</b>'}
    created = api.post("/v1/access-requests", "eve", body)
    assert created.status_code == 201

    page = Browser(app, "alice", "contoso").page()
    assert "<script>" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(&#34;why&#34;)&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in page


# --- details the page must get right ------------------------------------------------


def _row_of(page: str, request_id: str) -> str:
    match = re.search(r"<tr>\s*<td><code>" + re.escape(request_id) + r"</code></td>.*?</tr>", page, re.S)
    assert match, page
    return match.group(0)


def test_support_request_tenant_sees_no_end_time_for_a_removal(app, api, approved_request):
    """SPEC §5: bob's row of a revoked request shows `approved`, and no end time either."""
    request_id = approved_request["id"]
    Browser(app, "alice", "contoso").act(request_id, "revoke")
    row = _row_of(Browser(app, "bob", "fabrikam").page(), request_id)
    assert "approved" in row
    assert "UTC" not in row  # the Ended column is empty: the removal's time is not shown


def test_sign_in_starts_a_new_csrf_token(app):
    browser = Browser(app)
    before = browser.csrf("/admin/login")
    assert browser.sign_in(token("alice", "contoso")).status_code == 302
    after = browser.session()["admin_csrf"]
    assert after != before
    assert browser.csrf() == after


def test_every_page_carries_all_security_headers(app):
    for answer in (
        Browser(app).client.get("/admin/login"),
        Browser(app, "alice", "contoso").client.get("/admin"),
    ):
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, name
    assert SECURITY_HEADERS["X-Frame-Options"] == "DENY"
    assert SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in SECURITY_HEADERS["Content-Security-Policy"]


def test_a_token_over_the_cookie_limit_is_400_and_named(app):
    browser = Browser(app)
    answer = browser.sign_in("x" * 2801)
    assert answer.status_code == 400
    assert "longer than 2800 characters" in answer.get_data(as_text=True)
    assert "admin_token" not in browser.session()


def test_a_reject_reason_over_2000_characters_is_refused(app, api, access_request):
    request_id = access_request["id"]
    bob = Browser(app, "bob", "fabrikam")
    page = bob.act(request_id, "reject", tenant_id="fabrikam", reason="r" * 2001)
    assert "at most 2000 characters" in page
    assert status_for(api, request_id, "alice", "contoso") == "pending"
    bob.act(request_id, "reject", tenant_id="fabrikam", reason="r" * 2000)
    assert status_for(api, request_id, "alice", "contoso") == "rejected"


def test_an_admin_of_both_tenants_is_still_offered_the_other_partys_approval(app, api, access_request):
    """dana approved for contoso (resource): the page must still offer Approve for fabrikam,
    which the workflow allows (the approval counts per party)."""
    dana = Browser(app, "dana", "contoso")
    page = dana.act(access_request["id"], "approve", tenant_id="contoso")
    assert "Approve for fabrikam" in page
    assert "You approved on behalf of fabrikam" not in page


def test_the_engineer_under_another_case_is_not_offered_its_own_request(app, api, access_request):
    """person_key: `Eve` is the same person as `eve` to the self-approval rule; the page
    must not offer what the workflow refuses."""
    body = {"principal": "Eve", "role": "Global Administrator"}
    assert api.put("/v1/tenants/contoso/role-assignments", "ops", body).status_code == 201
    page = Browser(app, "Eve", "contoso").page()
    assert access_request["id"] in page
    assert "You filed this request: another admin of contoso approves or rejects it." in page
    assert "Approve for contoso" not in page


def test_a_same_tenant_request_is_approved_as_the_resource_tenant(app, api):
    body = {"tenant_id": "fabrikam", "resource_tenant_id": "fabrikam", "title": "our own sign-ins"}
    ticket = api.post("/v1/support-requests", "bob", body).get_json()
    assert (
        api.post(f"/v1/support-requests/{ticket['id']}/assign", "eve", {"engineer": "eve"}).status_code == 200
    )
    created = api.post(
        "/v1/access-requests", "eve", {"support_request_id": ticket["id"], "justification": "x"}
    )
    assert created.status_code == 201, created.get_json()
    page = Browser(app, "bob", "fabrikam").page()
    assert "You act on behalf of fabrikam, the resource tenant." in page
    assert "Approve for fabrikam" in page

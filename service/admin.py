"""The admin web page (SPEC §7): tenant admins see pending support access requests,
approve or reject them, see approved access to their tenant's data and remove it.

*(Project choice)* server-rendered HTML, not part of the JSON API. The admin signs in by
pasting a bearer token; it is verified exactly like an API call's token, kept in Flask's
signed session cookie (HttpOnly, SameSite=Lax) and verified again on every page, so an
expired token ends the sign-in. Every form carries a CSRF token held in the session. The
actions call the same workflow functions as the JSON API, with the same rules; their
400/403/404/409 answers become a message on the page (POST, redirect, GET).

Visibility follows SPEC §5 through `workflow.list_access_requests` with each tenant's
view: approved access (with "Remove access") is listed only under its resource tenant;
the support request tenant sees its requests with its own view's status, in which a
removal never shows.
"""

from __future__ import annotations

import hmac
import io
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

import peewee
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException

from models import AccessRequest, Tenant
from service import clock, workflow
from service.api import policy, provider
from service.directory import person_key
from service.errors import ApiError, BadRequest, SupportAccessError, Unauthorized, store_failed
from service.validation import read_body, refuse_nul_characters, refuse_undecodable_url
from service.viewer import Viewer, viewer_for

log = logging.getLogger("support_access")

bp = Blueprint("admin", __name__, url_prefix="/admin")

TOKEN_KEY = "admin_token"
CSRF_KEY = "admin_csrf"
# A browser drops cookies over 4 KB; the token travels in the session cookie.
MAX_TOKEN_LENGTH = 2800
MAX_REASON_LENGTH = 2000  # as the JSON API's Reject schema
PARTY_LABELS = {"resource": "resource tenant", "support_request": "support request tenant"}
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@bp.record_once
def _session_cookie(state) -> None:
    """The session cookie holds the admin's token: never readable by scripts (Flask's
    default), not sent on cross-site subrequests or form posts, and sent only to the
    page's own paths (a browser would send a cookie for `/` to every app of the host)."""
    config = state.app.config
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_PATH"] = bp.url_prefix
    if not config.get("SESSION_COOKIE_SAMESITE"):
        config["SESSION_COOKIE_SAMESITE"] = "Lax"
    state.app.session_interface = AdminOnlySessions()


class AdminOnlySessions(SecureCookieSessionInterface):
    """Sessions exist for the admin page only: the JSON API authenticates every call by
    its bearer token, and opening a signed cookie session would cost every decision."""

    def open_session(self, app, request):
        if not request.path.startswith(bp.url_prefix):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def get_cookie_secure(self, app) -> bool:
        """A page served over HTTPS keeps its cookie (the admin's token) off plain HTTP;
        over HTTP (development on 127.0.0.1) a Secure cookie would never come back."""
        return super().get_cookie_secure(app) or request.is_secure


# --- what the page shows ----------------------------------------------------------------


@dataclass
class Row:
    """One access request as one tenant sees it."""

    id: str
    ticket_id: str
    ticket_title: str
    engineer: str
    resource_tenant_id: str
    support_request_tenant_id: str
    justification: str
    status: str  # in this tenant's view
    status_class: str
    party: str  # the party this tenant's admins approve as
    created_at: str
    expires_at: str
    approved_at: str
    access_expires_at: str
    finished_at: str
    rejection_reason: str
    required: list[str]
    approvals: list[str]
    approved_by_me: bool
    filed_by_me: bool  # the requesting engineer may never approve or reject: not offered
    party_has_approved: bool  # in full: neither Approve nor Reject is offered


@dataclass
class TenantPage:
    id: str
    name: str
    pending: list[Row] = field(default_factory=list)  # approve / reject
    access: list[Row] = field(default_factory=list)  # approved, this is the resource tenant
    other: list[Row] = field(default_factory=list)  # everything else still listed


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _row(item: AccessRequest, view: str, tenant_id: str, viewer: Viewer) -> Row:
    status = workflow.view_status(item, view)
    party = "resource" if tenant_id == item.resource_tenant_id else "support_request"
    approvals = workflow.approvals_of(policy(), item)
    me = person_key(viewer.principal)
    return Row(
        id=item.id,
        ticket_id=item.support_request_id,
        ticket_title=item.support_request.title,
        engineer=item.engineer,
        resource_tenant_id=item.resource_tenant_id,
        support_request_tenant_id=item.support_request_tenant_id,
        justification=item.justification,
        status=status,
        status_class={workflow.PENDING: "pending", workflow.APPROVED: "live"}.get(status, "ended"),
        party=PARTY_LABELS[party],
        created_at=_when(item.created_at),
        expires_at=_when(item.expires_at),
        approved_at=_when(item.approved_at),
        access_expires_at=_when(item.access_expires_at),
        finished_at=_when(workflow.finished_at_in_view(item, view)),
        rejection_reason=(item.rejection_reason or "") if status == workflow.REJECTED else "",
        required=[
            f"{r['tenant_id']} ({PARTY_LABELS[r['party']]})" for r in workflow.required_approvals(item)
        ],
        approvals=[f"{a.approver} for {a.tenant_id}, {_when(a.at)}" for a in approvals],
        # as the workflow compares them: the page must not offer what the call refuses
        approved_by_me=any(a.party == party and person_key(a.approver) == me for a in approvals),
        filed_by_me=person_key(item.engineer) == me,
        party_has_approved=status == workflow.PENDING and workflow.party_has_approved(policy(), item, party),
    )


def _tenant_page(viewer: Viewer, tenant_id: str, name: str, now: datetime) -> TenantPage:
    page = TenantPage(tenant_id, name)
    for item, view in workflow.list_access_requests(viewer, policy(), tenant_id, None, now):
        row = _row(item, view, tenant_id, viewer)
        if row.status == workflow.PENDING:
            page.pending.append(row)
        elif row.status == workflow.APPROVED and view == "resource" and item.resource_tenant_id == tenant_id:
            page.access.append(row)
        else:
            page.other.append(row)
    return page


# --- sign-in and CSRF ---------------------------------------------------------------------


def _csrf_token() -> str:
    token = session.get(CSRF_KEY)
    if not token:
        token = session[CSRF_KEY] = secrets.token_urlsafe(32)
    return token


@bp.context_processor
def _template_helpers() -> dict:
    return {"csrf_token": _csrf_token}


@bp.before_request
def _check_csrf() -> None:
    if request.method != "POST":
        refuse_undecodable_url(request.environ)
        return
    if request.mimetype != "application/x-www-form-urlencoded":  # as the page's forms send it
        abort(415, "The page's forms are sent URL-encoded (application/x-www-form-urlencoded).")
    # The raw form first (cached: request.form is parsed from it), to refuse undecodable bytes.
    form = _read_form()
    sent = request.form.get("csrf_token", "").encode()
    expected = session.get(CSRF_KEY, "").encode()
    if not expected or not hmac.compare_digest(sent, expected):
        abort(400, "The form is out of date or did not come from this page. Reload the page and try again.")
    refuse_undecodable_url(request.environ, form)
    refuse_nul_characters(request.path, request.form.items(multi=True))


def _read_form() -> bytes:
    """The whole form, as the API's routes read a body: 413 past MAX_CONTENT_LENGTH.
    Werkzeug's own read of a chunked body under granian stopped at the limit without a
    word, and the form was parsed cut short. Put back as the request's body, with its
    length, so that request.form is parsed from what was read."""
    raw = read_body(request.environ, current_app.config["MAX_CONTENT_LENGTH"])
    request.environ.pop("wsgi.input_terminated", None)
    request.environ.pop("HTTP_TRANSFER_ENCODING", None)
    request.environ.update({"wsgi.input": io.BytesIO(raw), "CONTENT_LENGTH": str(len(raw))})
    return request.get_data(cache=True)


@bp.after_request
def _security_headers(response):
    response.headers.update(SECURITY_HEADERS)
    return response


def _signed_in() -> Viewer | None:
    """The signed-in admin, its token verified again; None (and signed out) if it is gone."""
    token = session.get(TOKEN_KEY)
    if not token:
        return None
    try:
        caller = current_app.extensions["token_verifier"].verify(token)
    except Unauthorized:
        session.pop(TOKEN_KEY, None)
        flash("Your sign-in has expired or is no longer valid. Sign in with a fresh token.", "error")
        return None
    return viewer_for(policy(), caller, provider())


def _to_login():
    return redirect(url_for("admin.login_form"))


@bp.get("/login")
def login_form():
    return render_template("admin/login.html")


@bp.post("/login")
def login():
    token = request.form.get("token", "").strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    session.pop(TOKEN_KEY, None)
    if len(token) > MAX_TOKEN_LENGTH:
        message = f"Sign-in failed: the token is longer than {MAX_TOKEN_LENGTH} characters."
        return render_template("admin/login.html", error=message), 400
    try:
        caller = current_app.extensions["token_verifier"].verify(token)
    except Unauthorized as exc:
        return render_template("admin/login.html", error=f"Sign-in failed: {exc.message}"), 401
    session.clear()  # a new sign-in starts a new session, with a new CSRF token
    session[TOKEN_KEY] = token
    session[CSRF_KEY] = secrets.token_urlsafe(32)
    log.info("admin page: %s signed in", caller.principal)
    return redirect(url_for("admin.index"))


@bp.post("/logout")
def logout():
    session.clear()
    flash("Signed out.", "ok")
    response = _to_login()
    # A session cookie set before the page's own moved to Path=/admin is shadowed by that
    # one; once it is gone (the flash read), the old one would sign the browser back in.
    response.delete_cookie(current_app.config["SESSION_COOKIE_NAME"], path="/")
    return response


# --- the page and its actions ----------------------------------------------------------


@bp.get("")
def index():
    viewer = _signed_in()
    if viewer is None:
        return _to_login()
    now = clock.now()
    workflow.sweep(now)
    tenant_ids = sorted(viewer.admin_of)
    names = {t.id: t.name for t in Tenant.select().where(Tenant.id.in_(tenant_ids or [""]))}
    tenants = [_tenant_page(viewer, t, names.get(t, t), now) for t in tenant_ids]
    return render_template("admin/index.html", viewer=viewer, tenants=tenants)


@bp.post("/requests/<request_id>/approve")
def approve(request_id: str):
    return _act(request_id, "approve")


@bp.post("/requests/<request_id>/reject")
def reject(request_id: str):
    return _act(request_id, "reject")


@bp.post("/requests/<request_id>/revoke")
def revoke(request_id: str):
    return _act(request_id, "revoke")


def _act(request_id: str, action: str):
    viewer = _signed_in()
    if viewer is None:
        return _to_login()
    tenant_id = request.form.get("tenant_id", "")  # as the page's own form sent it: an id is never trimmed
    if action != "revoke" and not tenant_id:
        abort(400, "tenant_id: missing (the tenant on whose behalf you act).")
    now = clock.now()
    try:
        if action == "approve":
            item = workflow.approve(policy(), viewer, request_id, tenant_id, now)
        elif action == "reject":
            reason = request.form.get("reason", "").strip()
            if len(reason) > MAX_REASON_LENGTH:
                raise BadRequest(f"reason: at most {MAX_REASON_LENGTH} characters")
            item = workflow.reject(policy(), viewer, request_id, tenant_id, reason or None, now)
        else:
            item = workflow.revoke(policy(), viewer, request_id, now)
    except ApiError as exc:
        flash(f"Could not {action} access request {request_id}: {exc.message}", "error")
    else:
        flash(_done(action, item, tenant_id), "ok")
    return redirect(url_for("admin.index"))


def _done(action: str, item: AccessRequest, tenant_id: str) -> str:
    if action == "revoke":
        return (
            f"Access removed: {item.engineer} can no longer read {item.resource_tenant_id}'s "
            f"diagnostic data under access request {item.id}."
        )
    if action == "reject":
        return f"Access request {item.id} is rejected."
    if item.status == workflow.APPROVED:
        return (
            f"Access request {item.id} is approved: {item.engineer} may read "
            f"{item.resource_tenant_id}'s diagnostic data until {_when(item.access_expires_at)}."
        )
    return f"Your approval on behalf of {tenant_id} is recorded; the request waits for the other approvals."


# --- errors: an HTML page, never a stack trace ------------------------------------------


def _error_page(status: int, title: str, message: str):
    return render_template("admin/error.html", status=status, title=title, message=message), status


@bp.errorhandler(HTTPException)
def error_page_for(exc: HTTPException):
    return _error_page(exc.code or 500, exc.name, exc.description or exc.name)


@bp.errorhandler(SupportAccessError)
def _our_error(exc: SupportAccessError):
    return _error_page(exc.status, "Error", exc.message)


@bp.errorhandler(peewee.DatabaseError)
@bp.errorhandler(peewee.InterfaceError)
def _store_error(exc: Exception):
    if not store_failed(exc):  # an IntegrityError, say: a bug of ours
        return _unexpected(exc)
    log.error("store unavailable: %s", exc)
    return _error_page(503, "Service Unavailable", "The data store is unavailable. Try again shortly.")


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    log.exception("unhandled error on the admin page")
    return _error_page(500, "Internal Server Error", "Internal error; see the service log.")

"""Identity (API.md "Identity"): bearer JWTs, 401s, and that claims never grant anything."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from service import auth as service_auth
from service import create_app
from service.errors import ConfigError
from tests.conftest import DIRECTORY_FILE, SECRET, auth, token
from tests.helpers import rsa_key, write_jwks
from tests.served import production_environment

REPO = Path(__file__).resolve().parent.parent
POLICY = "/v1/policy"  # operators only: 200 for ops, 403 for anyone else authenticated


def claims(**overrides) -> dict:
    now = datetime.now(UTC)
    body = {
        "sub": "ops",
        "tid": "provider",
        "aud": "support-access",
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def hs256(**overrides) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def bearer(value: str) -> dict:
    return {"Authorization": f"Bearer {value}"}


def assert_accepted(answer) -> None:
    """The token was accepted: apps of base_config have no directory, so the principal
    holds no role and /v1/policy answers 403 (not 401, and not a 5xx)."""
    assert answer.status_code == 403, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["code"] == "not_operator"


def assert_401(answer) -> None:
    assert answer.status_code == 401, answer.get_data(as_text=True)
    assert answer.mimetype == "application/json"
    body = answer.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert all(isinstance(v, str) and v for v in body["error"].values())
    assert "Traceback" not in answer.get_data(as_text=True)
    assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="support-access"')


def test_valid_token_is_accepted(client):
    assert client.get(POLICY, headers=bearer(hs256())).status_code == 200


# --- refused tokens ----------------------------------------------------------------------


def test_missing_authorization_header(client):
    assert_401(client.get(POLICY))
    assert_401(client.post("/v1/decisions", json={"principal": "eve"}))


def test_401_says_whether_a_token_was_refused_or_missing(client):
    """RFC 6750 §3: the challenge names `invalid_token` only when a token was sent. The
    decision endpoint (its own fast path) and the Flask routes answer alike."""
    for path, method in ((POLICY, client.get), ("/v1/decisions", client.post)):
        missing = method(path)
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="support-access"'
        refused = method(path, headers=bearer(hs256(aud="someone-else")))
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="support-access", error="invalid_token"'
    assert "WWW-Authenticate" not in client.get(POLICY, headers=bearer(hs256())).headers


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30",
        "Basic b3BzOnNlY3JldA==",
        "Token " + "x" * 20,
    ],
)
def test_malformed_authorization_is_401(client, header):
    assert_401(client.get(POLICY, headers={"Authorization": header}))


def test_raw_token_without_bearer_scheme_is_401(client):
    assert_401(client.get(POLICY, headers={"Authorization": hs256()}))


@pytest.mark.parametrize("scheme", ["Basic", "Token", "JWT"])
def test_a_good_token_under_another_scheme_than_bearer_is_401(client, scheme):
    assert_401(client.get(POLICY, headers={"Authorization": f"{scheme} {hs256()}"}))


def test_wrong_signature_is_401(client):
    forged = jwt.encode(claims(), SECRET + "-but-not-quite", algorithm="HS256")
    assert_401(client.get(POLICY, headers=bearer(forged)))


def test_tampered_payload_is_401(client):
    header, _, signature = hs256(sub="carol").split(".")
    payload = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    assert_401(client.get(POLICY, headers=bearer(f"{header}.{payload}.{signature}")))


def test_expired_token_is_401(client):
    assert_401(client.get(POLICY, headers=bearer(token("ops", ttl=timedelta(seconds=-5)))))


def test_token_not_yet_valid_is_401(client):
    later = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
    assert_401(client.get(POLICY, headers=bearer(hs256(nbf=later))))


@pytest.mark.parametrize("claim", ["iat", "nbf"])
def test_issuer_clock_a_little_ahead_is_accepted(client, claim):
    """An issuer whose clock runs a second or two ahead stamps iat/nbf in our future: such
    a token is valid (RFC 7519 iat is informational; nbf allows "some small leeway")."""
    ahead = int(time.time()) + 2
    answer = client.get(POLICY, headers=bearer(hs256(**{claim: ahead})))
    assert answer.status_code == 200, answer.get_data(as_text=True)


@pytest.mark.parametrize("claim", ["iat", "nbf"])
def test_iat_or_nbf_beyond_the_skew_is_401(client, claim):
    later = int(time.time()) + service_auth.CLOCK_SKEW + 30
    assert_401(client.get(POLICY, headers=bearer(hs256(**{claim: later}))))


def test_token_expired_a_second_ago_is_401(client):
    """The skew tolerance is for not-yet-valid times only: an expired token stays refused."""
    assert_401(client.get(POLICY, headers=bearer(hs256(exp=int(time.time()) - 1))))


def test_a_token_that_expires_after_it_was_checked_is_401_from_then_on(client, monkeypatch):
    """Verified tokens are remembered (service.auth.REVERIFY_AFTER), but never past
    their `exp`: a client reusing its token is refused once it has expired."""
    expires = int(time.time()) + 60
    signed = hs256(exp=expires)
    assert client.get(POLICY, headers=bearer(signed)).status_code == 200

    monkeypatch.setattr(service_auth.time, "time", lambda: expires + 1)

    assert_401(client.get(POLICY, headers=bearer(signed)))


@pytest.mark.parametrize("audience", ["someone-else", "support-access-v2", ["other", "api"]])
def test_wrong_audience_is_401(client, audience):
    assert_401(client.get(POLICY, headers=bearer(hs256(aud=audience))))


@pytest.mark.parametrize("missing", ["exp", "aud", "sub"])
def test_missing_required_claim_is_401(client, missing):
    body = claims()
    del body[missing]
    assert_401(client.get(POLICY, headers=bearer(jwt.encode(body, SECRET, algorithm="HS256"))))


@pytest.mark.parametrize(
    "claim",
    [
        {"exp": "9999999999"},
        {"exp": True},
        {"nbf": "0"},
        {"iat": [1]},
        {"tid": 7},
        {"tid": ["provider"]},
    ],
)
def test_malformed_claims_are_401(client, claim):
    assert_401(client.get(POLICY, headers=bearer(hs256(**claim))))


def test_a_token_without_tid_is_accepted(client):
    assert client.get(POLICY, headers=bearer(hs256(tid=None))).status_code == 200


@pytest.mark.parametrize("subject", ["", 123, ["ops"]])
def test_subject_must_be_a_non_empty_string(client, subject):
    assert_401(client.get(POLICY, headers=bearer(hs256(sub=subject))))


def test_alg_none_is_401(client):
    unsigned = jwt.encode(claims(), None, algorithm="none")
    assert_401(client.get(POLICY, headers=bearer(unsigned)))


def test_hs512_with_the_right_secret_is_401(client):
    other_alg = jwt.encode(claims(), SECRET, algorithm="HS512")
    assert_401(client.get(POLICY, headers=bearer(other_alg)))


# --- claims never grant ------------------------------------------------------------------


def test_unknown_subject_acts_as_nobody(client):
    answer = client.get(POLICY, headers=bearer(hs256(sub="stranger")))
    assert answer.status_code == 403


def test_tid_does_not_grant_roles(api, client, access_request):
    """alice signed in to fabrikam is still only a contoso admin."""
    url = f"/v1/access-requests/{access_request['id']}/approve"
    as_fabrikam = auth("alice", "fabrikam")
    answer = client.post(url, headers=as_fabrikam, json={"tenant_id": "fabrikam"})
    assert answer.status_code == 403, answer.get_json()
    answer = client.post(url, headers=as_fabrikam, json={"tenant_id": "contoso"})
    assert answer.status_code == 200, answer.get_json()
    approvals = answer.get_json()["approvals"]
    assert [(a["tenant_id"], a["approver"]) for a in approvals] == [("contoso", "alice")]


def test_tid_of_an_operator_tenant_does_not_make_an_operator(client):
    assert client.get(POLICY, headers=auth("alice", "provider")).status_code == 403
    assert client.get(POLICY, headers=auth("ops", "contoso")).status_code == 200


def test_tid_is_recorded_in_the_audit_log(api, client, access_request):
    url = f"/v1/access-requests/{access_request['id']}/approve"
    client.post(url, headers=auth("alice", "fabrikam"), json={"tenant_id": "contoso"})
    events = api.get("/v1/audit-events?tenant_id=contoso&activity=access_request.approval_added", "alice")
    items = events.get_json()["items"]
    assert len(items) == 1
    assert items[0]["actor"] == "alice"
    assert "fabrikam" in json.dumps(items[0])


# --- configuration ---------------------------------------------------------------------------


def base_config(tmp_path: Path, **overrides) -> dict:
    config = {
        "TESTING": True,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'auth.db'}",
        "DECISION_LOG": str(tmp_path / "decisions.log"),
        "JWT_SECRET": None,
        "JWKS": None,
    }
    config.update(overrides)
    return config


def test_with_a_jwks_only_every_app_of_the_machine_shares_one_generated_session_key(tmp_path, rsa_keys):
    """The admin page's session and the audit view's paging token are keyed by it: workers
    with keys of their own would refuse each other's cookies and tokens."""
    jwks = write_jwks(tmp_path / "jwks.json", [("k1", rsa_keys[0], "RS256")])
    first, second = (create_app(base_config(tmp_path, JWKS=str(jwks))) for _ in range(2))
    key_file = Path(first.instance_path) / "session-key"

    assert first.secret_key == second.secret_key == key_file.read_text(encoding="utf-8")
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_without_a_writable_instance_folder_a_jwks_app_still_starts(tmp_path, rsa_keys, monkeypatch):
    import service

    def unwritable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(service, "_kept_random_key", unwritable)
    jwks = write_jwks(tmp_path / "jwks.json", [("k1", rsa_keys[0], "RS256")])
    app = create_app(base_config(tmp_path, JWKS=str(jwks)))
    assert len(app.secret_key) == 32  # a key of its own, for this process only


def test_a_generated_key_is_drawn_once_whoever_writes_it_first(tmp_path):
    from service import _kept_random_key

    path = tmp_path / "key"
    first = _kept_random_key(path)
    assert len(first) >= 32 and _kept_random_key(path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no drawn file left behind


def test_refuses_to_start_without_secret_or_jwks(tmp_path):
    with pytest.raises(ConfigError):
        create_app(base_config(tmp_path))
    with pytest.raises(ConfigError):
        create_app(base_config(tmp_path, JWT_SECRET="", JWKS=""))


@pytest.mark.parametrize("secret", ["", " ", "\t\n  "])
@pytest.mark.parametrize("with_jwks", [False, True])
def test_refuses_to_start_with_a_blank_secret(tmp_path, rsa_keys, secret, with_jwks):
    """Tokens signed with "   " used to verify. A blank secret is refused even beside a
    JWKS: it is a setting gone wrong."""
    jwks = str(write_jwks(tmp_path / "jwks.json", [("k1", rsa_keys[0], "RS256")])) if with_jwks else None
    with pytest.raises(ConfigError) as refused:
        create_app(base_config(tmp_path, JWT_SECRET=secret, JWKS=jwks))
    assert "SUPPORT_ACCESS_JWT_SECRET" in refused.value.message


def test_refuses_to_start_with_a_blank_secret_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPPORT_ACCESS_JWT_SECRET", "   ")
    monkeypatch.setenv("SUPPORT_ACCESS_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    with pytest.raises(ConfigError, match="SUPPORT_ACCESS_JWT_SECRET is empty or only whitespace"):
        create_app()


def secret_warnings(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "JWT_SECRET" in r.getMessage()
    ]


def test_a_short_secret_is_accepted_with_one_warning_at_start(tmp_path, caplog):
    caplog.set_level("WARNING", logger="support_access")
    app = create_app(base_config(tmp_path, JWT_SECRET="short"))

    assert secret_warnings(caplog) == [
        "SUPPORT_ACCESS_JWT_SECRET is 5 bytes; RFC 7518 §3.2 wants at least 32 (256 bits) "
        "for HS256, or tokens can be forged by guessing it"
    ]
    minted = service_auth.mint_token("short", "ops", "provider", timedelta(hours=1), datetime.now(UTC))
    assert app.test_client().get(POLICY, headers=bearer(minted)).status_code == 403  # checked: no role


def test_a_secret_of_32_bytes_is_not_warned_about(tmp_path, caplog):
    caplog.set_level("WARNING", logger="support_access")
    create_app(base_config(tmp_path, JWT_SECRET="é" * 16))  # 32 bytes in UTF-8
    assert secret_warnings(caplog) == []


def test_a_secret_beside_a_jwks_is_warned_about_and_both_kinds_of_token_count(tmp_path, caplog, rsa_keys):
    caplog.set_level("WARNING", logger="support_access")
    jwks = write_jwks(tmp_path / "jwks.json", [("k1", rsa_keys[0], "RS256")])
    app = create_app(base_config(tmp_path, JWT_SECRET="é" * 16, JWKS=str(jwks)))

    assert secret_warnings(caplog) == [
        "SUPPORT_ACCESS_JWT_SECRET and SUPPORT_ACCESS_JWKS are both set: HS256 tokens signed with "
        "the secret are accepted beside the JWKS's; unset the secret in production"
    ]
    minted = service_auth.mint_token("é" * 16, "ops", "provider", timedelta(hours=1), datetime.now(UTC))
    signed = jwt.encode(claims(), rsa_keys[0], algorithm="RS256", headers={"kid": "k1"})
    for each_kind in (minted, signed):
        assert app.test_client().get(POLICY, headers=bearer(each_kind)).status_code == 403  # checked: no role


def test_refuses_to_start_with_unreadable_jwks(tmp_path):
    with pytest.raises(ConfigError):
        create_app(base_config(tmp_path, JWKS=str(tmp_path / "missing-jwks.json")))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError):
        create_app(base_config(tmp_path, JWKS=str(broken)))


@pytest.fixture(scope="module")
def rsa_keys():
    """The published RSA key and a stranger's."""
    return rsa_key(), rsa_key()


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def jwks_app(tmp_path, rsa_keys, ec_key):
    """An app that trusts only a JWKS file: k1 (RS256) and k2 (ES256); no HS256 secret."""
    good, _ = rsa_keys
    path = write_jwks(tmp_path / "jwks.json", [("k1", good, "RS256"), ("k2", ec_key, "ES256")])
    app = create_app(base_config(tmp_path, JWKS=str(path)))
    result = app.test_cli_runner().invoke(args=["directory", "import", str(DIRECTORY_FILE)])
    assert result.exit_code == 0, result.output
    return app


def test_rs256_token_from_jwks_is_accepted(jwks_app, rsa_keys):
    good, _ = rsa_keys
    signed = jwt.encode(claims(), good, algorithm="RS256", headers={"kid": "k1"})
    answer = jwks_app.test_client().get(POLICY, headers=bearer(signed))
    assert answer.status_code == 200, answer.get_json()


def test_es256_token_from_jwks_is_accepted(jwks_app, ec_key):
    signed = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "k2"})
    assert jwks_app.test_client().get(POLICY, headers=bearer(signed)).status_code == 200


def test_jwks_app_refuses_hs256(jwks_app):
    assert_401(jwks_app.test_client().get(POLICY, headers=bearer(hs256())))


def test_jwks_app_refuses_key_not_in_set(jwks_app, rsa_keys):
    _, stranger = rsa_keys
    client = jwks_app.test_client()
    assert_401(
        client.get(POLICY, headers=bearer(jwt.encode(claims(), stranger, "RS256", headers={"kid": "k1"})))
    )
    assert_401(
        client.get(POLICY, headers=bearer(jwt.encode(claims(), stranger, "RS256", headers={"kid": "zz"})))
    )


def test_jwks_app_refuses_expired_and_wrong_audience(jwks_app, rsa_keys):
    good, _ = rsa_keys
    client = jwks_app.test_client()
    past = int((datetime.now(UTC) - timedelta(minutes=5)).timestamp())
    expired = jwt.encode(claims(exp=past), good, algorithm="RS256", headers={"kid": "k1"})
    assert_401(client.get(POLICY, headers=bearer(expired)))
    other = jwt.encode(claims(aud="elsewhere"), good, algorithm="RS256", headers={"kid": "k1"})
    assert_401(client.get(POLICY, headers=bearer(other)))


def test_jwks_app_refuses_public_key_used_as_hmac_secret(jwks_app, rsa_keys):
    """Algorithm confusion: an HS256 token 'signed' with the published RSA public key."""
    good, _ = rsa_keys
    pem = good.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    signing_input += b"." + b64(json.dumps(claims()).encode())
    signature = b64(hmac.new(pem, signing_input, hashlib.sha256).digest())
    forged = (signing_input + b"." + signature).decode()
    assert_401(jwks_app.test_client().get(POLICY, headers=bearer(forged)))


def test_jwks_token_without_kid_is_checked_with_every_key_of_its_algorithm(tmp_path, rsa_keys, ec_key):
    first, second = rsa_keys
    path = write_jwks(
        tmp_path / "jwks.json", [("e1", ec_key, "ES256"), ("r1", first, "RS256"), ("r2", second, "RS256")]
    )
    keys = json.loads(path.read_text(encoding="utf-8"))
    for entry in keys["keys"]:  # as many identity providers publish them: no "alg"
        del entry["alg"]
    path.write_text(json.dumps(keys), encoding="utf-8")
    client = create_app(base_config(tmp_path, JWKS=str(path))).test_client()

    for key, algorithm in ((first, "RS256"), (second, "RS256"), (ec_key, "ES256")):
        signed = jwt.encode(claims(), key, algorithm=algorithm)  # no kid
        assert_accepted(client.get(POLICY, headers=bearer(signed)))
    assert_401(client.get(POLICY, headers=bearer(jwt.encode(claims(), rsa_key(), algorithm="RS256"))))


def test_a_jwks_key_published_for_encryption_does_not_check_signatures(tmp_path, rsa_keys):
    """RFC 7517 `use`: a key marked "enc" is not a signing key, whatever it could verify."""
    good, _ = rsa_keys
    path = write_jwks(tmp_path / "jwks.json", [("k1", good, "RS256")])
    keys = json.loads(path.read_text(encoding="utf-8"))
    keys["keys"][0]["use"] = "enc"
    path.write_text(json.dumps(keys), encoding="utf-8")
    client = create_app(base_config(tmp_path, JWKS=str(path))).test_client()

    for headers in ({"kid": "k1"}, None):
        assert_401(client.get(POLICY, headers=bearer(jwt.encode(claims(), good, "RS256", headers=headers))))


@pytest.mark.parametrize(("algorithm", "kid"), [("RS256", "k2"), ("ES256", "k1")])
def test_jwks_token_naming_a_key_of_another_type_is_refused(jwks_app, rsa_keys, ec_key, algorithm, kid):
    """k1 is RSA and k2 EC: a token naming the wrong one is a bad token (401), not a 500."""
    key = rsa_keys[0] if algorithm == "RS256" else ec_key
    signed = jwt.encode(claims(), key, algorithm=algorithm, headers={"kid": kid})
    assert_401(jwks_app.test_client().get(POLICY, headers=bearer(signed)))
    assert_401(jwks_app.test_client().post("/v1/decisions", json={}, headers=bearer(signed)))


class JwksServer:
    """A JWKS served over HTTP on 127.0.0.1 from `path`, counting the fetches."""

    def __init__(self, path: Path):
        import http.server
        import threading

        self.path, self.fetches = path, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.fetches += 1
                body = outer.path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_server(tmp_path, rsa_keys):
    """k1 (RS256) served over HTTP."""
    server = JwksServer(write_jwks(tmp_path / "jwks.json", [("k1", rsa_keys[0], "RS256")]))
    yield server
    server.close()


def test_jwks_url_keys_are_used_with_or_without_kid(tmp_path, jwks_server, rsa_keys, ec_key):
    client = create_app(base_config(tmp_path, JWKS=jwks_server.url)).test_client()
    good, stranger = rsa_keys
    for headers in ({"kid": "k1"}, None):
        signed = jwt.encode(claims(), good, algorithm="RS256", headers=headers)
        assert_accepted(client.get(POLICY, headers=bearer(signed)))
    assert_401(client.get(POLICY, headers=bearer(jwt.encode(claims(), stranger, algorithm="RS256"))))
    wrong_type = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "k1"})
    assert_401(client.get(POLICY, headers=bearer(wrong_type)))


def test_a_key_removed_from_the_jwks_url_is_refused_once_the_set_is_fetched_again(
    tmp_path, jwks_server, rsa_keys
):
    """Key rotation: a removed key must stop checking tokens (no per-key cache that
    outlives the key set, which would keep it for the worker's whole life)."""
    app = create_app(base_config(tmp_path, JWKS=jwks_server.url))
    client = app.test_client()
    old, new = rsa_keys
    assert_accepted(client.get(POLICY, headers=bearer(jwt.encode(claims(), old, "RS256", {"kid": "k1"}))))
    write_jwks(jwks_server.path, [("k2", new, "RS256")])
    app.extensions["token_verifier"].jwk_client.get_jwk_set(refresh=True)  # its 5 minutes ran out

    fresh = jwt.encode({**claims(), "jti": "another token"}, old, "RS256", {"kid": "k1"})
    assert_401(client.get(POLICY, headers=bearer(fresh)))
    assert_accepted(client.get(POLICY, headers=bearer(jwt.encode(claims(), new, "RS256", {"kid": "k2"}))))


def test_a_verified_token_is_checked_again_after_a_while(tmp_path, jwks_server, rsa_keys, monkeypatch):
    """A token already checked with a key that is then removed stops counting too, once
    service.auth.REVERIFY_AFTER has passed, though it has not expired."""
    app = create_app(base_config(tmp_path, JWKS=jwks_server.url))
    client = app.test_client()
    old, new = rsa_keys
    token = jwt.encode(claims(), old, "RS256", {"kid": "k1"})
    assert_accepted(client.get(POLICY, headers=bearer(token)))
    write_jwks(jwks_server.path, [("k2", new, "RS256")])
    app.extensions["token_verifier"].jwk_client.get_jwk_set(refresh=True)
    assert_accepted(client.get(POLICY, headers=bearer(token)))  # remembered for now

    later = time.time() + service_auth.REVERIFY_AFTER + 1
    monkeypatch.setattr(service_auth.time, "time", lambda: later)
    assert_401(client.get(POLICY, headers=bearer(token)))


def test_jwks_url_keys_without_kid_check_tokens_without_kid(tmp_path, rsa_keys):
    path = write_jwks(tmp_path / "jwks.json", [("k1", rsa_keys[0], "RS256")])
    keys = json.loads(path.read_text(encoding="utf-8"))
    del keys["keys"][0]["kid"]
    path.write_text(json.dumps(keys), encoding="utf-8")
    server = JwksServer(path)
    try:
        client = create_app(base_config(tmp_path, JWKS=server.url)).test_client()
        signed = jwt.encode(claims(), rsa_keys[0], algorithm="RS256")
        assert_accepted(client.get(POLICY, headers=bearer(signed)))
    finally:
        server.close()


def test_tokens_naming_unknown_keys_do_not_make_the_service_fetch_the_keys_each_time(
    tmp_path, jwks_server, rsa_keys
):
    """Anyone can send a token with a made-up kid; each must not cost a fetch of the
    key server (PyJWKClient refreshes for an unknown kid at most once per cooldown)."""
    client = create_app(base_config(tmp_path, JWKS=jwks_server.url)).test_client()
    assert_accepted(
        client.get(POLICY, headers=bearer(jwt.encode(claims(), rsa_keys[0], "RS256", {"kid": "k1"})))
    )
    for n in range(20):
        forged = jwt.encode(claims(), rsa_keys[1], algorithm="RS256", headers={"kid": f"made-up-{n}"})
        assert_401(client.get(POLICY, headers=bearer(forged)))
    assert jwks_server.fetches <= 2


def test_jwks_url_that_cannot_be_reached_is_503_not_a_bad_token(tmp_path, rsa_keys):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = create_app(base_config(tmp_path, JWKS=f"http://127.0.0.1:{port}/jwks.json")).test_client()
    signed = jwt.encode(claims(), rsa_keys[0], algorithm="RS256", headers={"kid": "k1"})

    answer = client.get(POLICY, headers=bearer(signed))

    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "unavailable"
    assert str(port) not in answer.get_json()["error"]["message"]


@pytest.mark.parametrize(
    "served",
    [b"<html>502 Bad Gateway</html>", b"\xff\xfe", b"[1, 2]", b'{"keys": "x"}', b'{"keys": []}'],
)
@pytest.mark.parametrize("kid", ["k1", None])
def test_a_jwks_url_answering_no_usable_key_set_is_503_not_a_bad_token(tmp_path, rsa_keys, served, kid):
    """A proxy's error page where the key set should be is the service's fault: every
    call answers 503 (as /readyz says), never a 500 or a 401 blaming the token."""
    path = tmp_path / "jwks.json"
    path.write_bytes(served)
    server = JwksServer(path)
    try:
        client = create_app(base_config(tmp_path, JWKS=server.url)).test_client()
        signed = jwt.encode(claims(), rsa_keys[0], algorithm="RS256", headers={"kid": kid} if kid else None)

        answer = client.get(POLICY, headers=bearer(signed))

        assert answer.status_code == 503, answer.get_json()
        assert answer.get_json()["error"]["code"] == "unavailable"
        assert client.get("/readyz").status_code == 503
        write_jwks(path, [("k1", rsa_keys[0], "RS256")])  # the key server mended
        client.application.extensions["token_verifier"].jwk_client.jwk_set_cache = None
        assert_accepted(client.get(POLICY, headers=bearer(signed)))
    finally:
        server.close()


def test_a_token_naming_a_kid_the_key_set_lacks_is_401(tmp_path, jwks_server, rsa_keys):
    client = create_app(base_config(tmp_path, JWKS=jwks_server.url)).test_client()
    signed = jwt.encode(claims(), rsa_keys[0], algorithm="RS256", headers={"kid": "k9"})
    assert_401(client.get(POLICY, headers=bearer(signed)))


@pytest.mark.parametrize("claim", ["sub", "tid"])
def test_claims_holding_a_nul_character_are_refused(client, claim):
    """PostgreSQL cannot store U+0000 in the audit log, where sub and tid are recorded."""
    assert_401(client.get(POLICY, headers=bearer(hs256(**{claim: "ops\u0000"}))))


def test_readyz_says_not_ready_while_the_jwks_url_cannot_be_fetched(tmp_path, rsa_keys):
    """Every /v1 call would answer 503 then: a load balancer should send calls elsewhere."""
    path = write_jwks(tmp_path / "jwks.json", [("k1", rsa_keys[0], "RS256")])
    server = JwksServer(path)
    app = create_app(base_config(tmp_path, JWKS=server.url))
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    server.close()
    app.extensions["token_verifier"].jwk_client.jwk_set_cache = None  # as when the cache runs out

    answer = client.get("/readyz")

    assert answer.status_code == 503
    assert "signing keys" in answer.get_json()["error"]["message"]
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(("claim", "longest"), [("sub", 256), ("tid", 128)])
def test_claims_longer_than_the_audit_log_holds_are_refused(client, claim, longest):
    """The audit log records sub and tid (API.md "Identity"); PostgreSQL would refuse a
    longer value, and an allowed read that cannot be recorded must not happen."""
    fits = client.get(POLICY, headers=bearer(hs256(**{claim: "o" * longest})))
    # ops, or (a sub that long) a principal with no role: accepted either way
    assert fits.status_code == (200 if claim == "tid" else 403), fits.get_data(as_text=True)
    assert_401(client.get(POLICY, headers=bearer(hs256(**{claim: "o" * (longest + 1)}))))


# --- the token CLI -------------------------------------------------------------------------


def mint(app, runner, *args: str) -> str:
    # `token` is a plain click command: under `flask` (FlaskGroup) it runs in an app
    # context; FlaskCliRunner does not push one for it, so the test does.
    with app.app_context():
        result = runner.invoke(args=["token", *args])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def test_token_cli_mints_an_accepted_token(app, runner, client):
    minted = mint(app, runner, "--sub", "ops", "--tenant", "provider")
    answer = client.get(POLICY, headers=bearer(minted))
    assert answer.status_code == 200, answer.get_json()
    decoded = jwt.decode(minted, SECRET, algorithms=["HS256"], audience="support-access")
    assert decoded["sub"] == "ops" and decoded["tid"] == "provider"


@pytest.mark.parametrize(
    "args",
    [
        ["--sub", "", "--tenant", "provider"],
        ["--sub", "ops", "--tenant", "p", "--ttl", "0"],
        ["--sub", "o" * 257, "--tenant", "provider"],
        ["--sub", "ops", "--tenant", "p" * 129],
    ],
)
def test_token_cli_refuses_a_token_the_service_would_refuse(app, runner, args):
    with app.app_context():
        result = runner.invoke(args=["token", *args])
    assert result.exit_code != 0 and "eyJ" not in result.output, result.output


def test_token_cli_refuses_a_lifetime_past_ten_years_as_a_usage_error(app, runner):
    with app.app_context():
        result = runner.invoke(args=["token", "--sub", "ops", "--tenant", "p", "--ttl", "99999999999999"])
    assert result.exit_code == 2 and "--ttl" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_token_cli_ttl_is_honoured(app, runner):
    minted = mint(app, runner, "--sub", "ops", "--tenant", "provider", "--ttl", "60")
    decoded = jwt.decode(minted, SECRET, algorithms=["HS256"], audience="support-access")
    assert 0 < decoded["exp"] - datetime.now(UTC).timestamp() <= 61


def test_token_cli_token_for_non_operator_is_refused_by_role(app, runner, client):
    minted = mint(app, runner, "--sub", "alice", "--tenant", "contoso")
    assert client.get(POLICY, headers=bearer(minted)).status_code == 403


ASK_POLICY = """
import sys
from service import create_app
client = create_app().test_client()
for token in sys.argv[1:]:
    print(client.get("/v1/policy", headers={"Authorization": "Bearer " + token}).status_code)
"""


def test_the_jwks_is_read_from_the_environment(tmp_path, rsa_keys):
    """API.md "Configuration": production reads its keys from SUPPORT_ACCESS_JWKS."""
    jwks = write_jwks(tmp_path / "jwks.json", [("k1", rsa_keys[0], "RS256")])
    tokens = [
        jwt.encode(claims(), rsa_keys[0], algorithm="RS256", headers={"kid": "k1"}),
        jwt.encode(claims(), rsa_keys[1], algorithm="RS256", headers={"kid": "k1"}),
        hs256(),
    ]
    command = [sys.executable, "-c", ASK_POLICY, *tokens]
    env = production_environment(tmp_path, JWKS=str(jwks))
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # accepted (ops holds no role in this empty directory: 403); a stranger's key and an
    # HS256 token (no secret configured) are refused
    assert done.stdout.split() == ["403", "401", "401"], done.stderr


def test_the_service_refuses_to_start_without_a_secret_or_jwks_in_the_environment(tmp_path):
    command = [sys.executable, "-c", ASK_POLICY]
    done = subprocess.run(
        command, cwd=REPO, env=production_environment(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "SUPPORT_ACCESS_JWT_SECRET" in done.stderr and "SUPPORT_ACCESS_JWKS" in done.stderr


def test_token_cli_through_the_flask_command(app, client, tmp_path):
    """The operator's real path: `flask --app service token ...` in a shell."""
    env = {
        **os.environ,
        "SUPPORT_ACCESS_JWT_SECRET": SECRET,
        "SUPPORT_ACCESS_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "SUPPORT_ACCESS_DECISION_LOG": str(tmp_path / "cli-decisions.log"),
    }
    flask = Path(sys.executable).with_name("flask")
    command = [str(flask), "--app", "service", "token", "--sub", "ops", "--tenant", "provider"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer = client.get(POLICY, headers=bearer(done.stdout.strip().splitlines()[-1]))
    assert answer.status_code == 200, answer.get_json()


def test_token_cli_works_under_the_test_cli_runner(runner):
    result = runner.invoke(args=["token", "--sub", "ops", "--tenant", "provider"])
    assert result.exit_code == 0, result.output

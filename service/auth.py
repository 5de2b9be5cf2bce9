"""Bearer-token identity (API.md "Identity"): HS256 with a shared secret for development
and tests, RS256/ES256 from a JWKS file or URL in production."""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from flask import Flask, current_app, g, request

from models import AuditEvent
from service.errors import ConfigError, Unauthorized, Unavailable

log = logging.getLogger("support_access")

AUDIENCE = "support-access"
# RFC 7518 §3.2: an HS256 key of at least the hash's size, 256 bits. Shorter ones are
# only warned about: development and acceptance setups use short secrets.
MIN_SECRET_BYTES = 32
TIME_CLAIMS = ("exp", "nbf", "iat")
# Seconds an issuer's clock may run ahead of ours: a token whose `nbf` or `iat` is at most
# this far in our future is valid (RFC 7519 §4.1.5 allows "some small leeway"; without it
# a token minted a second ahead was refused now and then). `exp` gets none (API.md:
# expired tokens are refused).
CLOCK_SKEW = 5
VERIFIED_CACHE_SIZE = 10_000
# A verified token is checked again after this long even if it has not expired: a key
# removed from the JWKS (fetched again every 5 minutes) stops counting for it too.
REVERIFY_AFTER = 300  # seconds
ASYMMETRIC = ("RS256", "ES256")
JWKS_FETCH_TIMEOUT = 5  # seconds
# The audit log's columns for the caller (models.AuditEvent): a longer claim (or one
# holding a NUL) could not be recorded, and an allowed read must be (SPEC §6).
CLAIM_LENGTHS = {"sub": AuditEvent.actor.max_length, "tid": AuditEvent.actor_tenant_id.max_length}


@dataclass(frozen=True)
class Caller:
    principal: str  # the token's `sub`
    token_tenant_id: str | None  # the token's `tid`, recorded in the audit log


class TokenVerifier:
    def __init__(self, secret: str | None, jwks: str | None):
        if not secret and not jwks:
            raise ConfigError(
                "set SUPPORT_ACCESS_JWT_SECRET (development) or SUPPORT_ACCESS_JWKS (production)"
            )
        if secret is not None:
            _check_secret(secret)
        if secret and jwks:
            # Both is a choice (a move from one to the other), but in production a secret
            # left set is a second way to sign tokens: said as each process starts.
            log.warning(
                "SUPPORT_ACCESS_JWT_SECRET and SUPPORT_ACCESS_JWKS are both set: HS256 tokens "
                "signed with the secret are accepted beside the JWKS's; unset the secret in production"
            )
        self.secret = secret
        self._verified: dict[str, tuple[Caller, float]] = {}
        self.jwk_client = None
        self.jwk_set = None
        if jwks and jwks.startswith(("http://", "https://")):
            # A short timeout: a worker waiting on an unreachable key server answers nobody.
            # No cache_keys: its per-kid cache outlives the key set, so a key removed from
            # the set would go on checking tokens for the worker's whole life.
            self.jwk_client = jwt.PyJWKClient(jwks, timeout=JWKS_FETCH_TIMEOUT)
        elif jwks:
            try:
                with open(jwks, encoding="utf-8") as handle:
                    self.jwk_set = jwt.PyJWKSet.from_dict(json.load(handle))
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                raise ConfigError(f"SUPPORT_ACCESS_JWKS: cannot load {jwks}: {exc}") from exc

    def keys_reachable(self) -> bool:
        """Can tokens be checked now? Only a JWKS URL can be out of reach (its keys are
        cached for minutes, so this fetches rarely)."""
        if self.jwk_client is None:
            return True
        try:
            self.jwk_client.get_jwk_set()
        except Exception:  # any failure to fetch them means not ready, never a 500
            return False
        return True

    def verify(self, token: str) -> Caller:
        """The caller a token names; verified tokens are remembered until they expire (or
        for REVERIFY_AFTER), so a client reusing its token pays for the signature check
        once in a while."""
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        caller, expires = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # simple bound; a re-verify is cheap
        self._verified[token] = (caller, min(expires, time.time() + REVERIFY_AFTER))
        return caller

    def _verify(self, token: str) -> tuple[Caller, float]:
        try:
            claims = self._claims(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}", code="invalid_token") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("invalid token: 'sub' must be a non-empty string", code="invalid_token")
        for name in TIME_CLAIMS:
            # PyJWT takes "9999999999" too; RFC 7519 times are JSON numbers.
            value = claims.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Unauthorized(f"invalid token: {name!r} must be a number", code="invalid_token")
        tid = claims.get("tid")
        if tid is not None and not isinstance(tid, str):
            raise Unauthorized("invalid token: 'tid' must be a string", code="invalid_token")
        for name, longest in CLAIM_LENGTHS.items():
            if len(claims.get(name) or "") > longest:
                message = f"invalid token: {name!r} must have at most {longest} characters"
                raise Unauthorized(message, code="invalid_token")
            if "\x00" in (claims.get(name) or ""):  # PostgreSQL text cannot hold it
                raise Unauthorized(f"invalid token: {name!r} holds a NUL character", code="invalid_token")
        return Caller(subject, tid), float(claims["exp"])

    def _claims(self, token: str) -> dict:
        """The token's claims, once its signature checks out with one of our keys."""
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if algorithm == "HS256" and self.secret:
            return self._decode(token, self.secret, algorithm)
        if algorithm not in ASYMMETRIC or not (self.jwk_client or self.jwk_set):
            raise jwt.InvalidAlgorithmError(f"algorithm {algorithm!r} is not accepted")
        keys = self._keys_for(algorithm, header.get("kid"))
        if not keys:
            raise jwt.InvalidTokenError(f"no {algorithm} key with kid {header.get('kid')!r}")
        # Without a kid, any key of the token's algorithm may have signed it.
        for key in keys[:-1]:
            try:
                return self._decode(token, key.key, algorithm)
            except jwt.InvalidSignatureError:
                continue
        return self._decode(token, keys[-1].key, algorithm)

    def _keys_for(self, algorithm: str, kid: str | None) -> list[jwt.PyJWK]:
        """The JWKS signing keys that can check `algorithm` (an RSA key cannot check
        ES256), with that kid if the token names one."""
        if self.jwk_client:
            keys = self._served_keys(kid)
        else:
            keys = [k for k in self.jwk_set.keys if kid in (None, k.key_id)]
        return [k for k in keys if k.algorithm_name == algorithm and k.public_key_use in ("sig", None)]

    def _served_keys(self, kid: str | None) -> list[jwt.PyJWK]:
        """The keys the JWKS URL serves (that kid's, if the token names one)."""
        with _key_server_faults():
            served = self.jwk_client.get_jwk_set().keys
        if kid is None:
            return served
        with _key_server_faults(but_not=jwt.PyJWKClientError):  # no such kid: a 401
            # The client fetches the set again for a kid it does not know (a rotated
            # key), at most once per cooldown whatever the tokens it is shown.
            return [self.jwk_client.get_signing_key(kid)]

    @staticmethod
    def _decode(token: str, key, algorithm: str) -> dict:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=AUDIENCE,
            options={"require": ["exp", "sub", "aud"]},
            leeway=CLOCK_SKEW,
        )
        # The leeway also postponed `exp` (PyJWT has one for all three): take it back.
        expires = claims["exp"]
        if isinstance(expires, int | float) and not isinstance(expires, bool) and expires <= time.time():
            raise jwt.ExpiredSignatureError("Signature has expired")
        return claims


@contextmanager
def _key_server_faults(but_not: type[Exception] | None = None):
    """A JWKS URL that cannot be fetched, or whose answer is no usable key set (not JSON,
    not an object, no key: a proxy's error page, say), is the service's fault, not the
    token's: 503, as /readyz says, rather than a 401 blaming the token or a 500."""
    try:
        yield
    except jwt.PyJWKClientConnectionError as exc:
        # The keys' server is down; no detail of ours (its address) to show.
        raise Unavailable("the signing keys (SUPPORT_ACCESS_JWKS) cannot be fetched now") from exc
    except (
        ValueError,
        jwt.PyJWKClientError,
        jwt.PyJWKSetError,
        jwt.PyJWKError,
    ) as exc:  # ValueError: not JSON
        if but_not is not None and isinstance(exc, but_not):
            raise
        log.error("SUPPORT_ACCESS_JWKS: the URL answered no usable key set: %s", exc)
        message = "the signing keys (SUPPORT_ACCESS_JWKS) are not a usable key set now"
        raise Unavailable(message) from exc


def _check_secret(secret: str) -> None:
    """Refuse a blank secret: a setting gone wrong, with which anyone could sign tokens the
    service accepts. Warn about a short one."""
    if not secret.strip():
        raise ConfigError(
            "SUPPORT_ACCESS_JWT_SECRET is empty or only whitespace: set a secret (at least "
            f"{MIN_SECRET_BYTES} bytes), or leave it unset and set SUPPORT_ACCESS_JWKS"
        )
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        log.warning(
            "SUPPORT_ACCESS_JWT_SECRET is %d bytes; RFC 7518 §3.2 wants at least %d (256 bits) "
            "for HS256, or tokens can be forged by guessing it",
            size,
            MIN_SECRET_BYTES,
        )


def mint_token(secret: str, subject: str, tenant: str, ttl: timedelta, now: datetime) -> str:
    """A development HS256 token with the claims the service reads."""
    claims = {
        "sub": subject,
        "tid": tenant,
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def init_app(app: Flask) -> None:
    app.extensions["token_verifier"] = TokenVerifier(app.config["JWT_SECRET"], app.config["JWKS"])


# Set in a request's WSGI environ once its token checks out.
AUTHENTICATED = "support_access.authenticated"


def caller_from_header(verifier: TokenVerifier, header: str) -> Caller:
    """The caller an `Authorization: Bearer <JWT>` header names (401 if none)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token", code="missing_token")
    return verifier.verify(token.strip())


def current_caller() -> Caller:
    """The authenticated caller of this request (401 if there is none)."""
    if "caller" not in g:
        verifier = current_app.extensions["token_verifier"]
        g.caller = caller_from_header(verifier, request.headers.get("Authorization", ""))
        request.environ[AUTHENTICATED] = True  # service/unread_body.py
    return g.caller

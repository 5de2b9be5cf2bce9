"""One exception hierarchy for the whole service, mapped to JSON errors in one place."""

from __future__ import annotations

import peewee


class SupportAccessError(Exception):
    """Base of every error the service raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status


# --- API errors: each carries its HTTP status and machine code -------------------


class ApiError(SupportAccessError):
    pass


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


# --- Policy errors ------------------------------------------------------------------


class PolicyError(SupportAccessError):
    """A policy directory could not be turned into a policy."""

    status, code = 503, "policy_unavailable"

    def __init__(self, message: str, **kwargs):
        super().__init__(bounded(message), **kwargs)


MESSAGE_LIMIT = 2000  # characters of a policy error kept: it goes to the API, the log and the audit log


def bounded(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text`, cut to `limit` characters: a schema error quotes the offending value whole,
    and YAML aliases can make that megabytes from a few lines."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


class PolicyLoadError(PolicyError):
    """A file is missing, unreadable or not valid YAML / Casbin model syntax."""


class PolicyNotLoaded(PolicyError):
    """No policy loads at start, and there is no last good copy: the worker is up but
    not ready until one does (service/starting.py)."""


class PolicyValidationError(PolicyError):
    """A file parsed but breaks the schema or a rule that spans files."""

    def __init__(self, file: str, place: str, problem: str):
        # Cut apart so that the whole message stays within MESSAGE_LIMIT, cut once.
        place, problem = bounded(place, 400), bounded(problem, MESSAGE_LIMIT - 500)
        super().__init__(f"{file}: {place}: {problem}")
        self.file, self.place, self.problem = file, place, problem


class ConfigError(SupportAccessError):
    """The service is configured in a way it cannot start with."""


# --- The store failing (peewee's errors, not ours) -----------------------------------

# Catch these, then ask store_failed(): peewee raises the bare DatabaseError, and also
# its subclasses that are not the store's fault.
DATABASE_ERRORS = (peewee.DatabaseError, peewee.InterfaceError)
STORE_FAILURES = (peewee.OperationalError, peewee.InterfaceError, peewee.InternalError)


def store_failed(exc: BaseException) -> bool:
    """Did the store itself fail (it cannot be opened, is not a database, lost its
    connection, broke inside)? Then the answer is 503 `store_unavailable`, a CLI command
    exits 2 and a starting worker waits up but not ready. sqlite3 reports a file that is
    not a database (or whose header was overwritten) as a bare DatabaseError, so that one
    counts; its other subclasses (IntegrityError, DataError, ProgrammingError,
    NotSupportedError) are bugs of ours and stay 500 `internal_error`."""
    return type(exc) is peewee.DatabaseError or isinstance(exc, STORE_FAILURES)

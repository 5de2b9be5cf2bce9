"""Reading the rest of a request's body before an error answer leaves.

An answer given before the body is read (a 413 by its Content-Length, a 415) leaves the
body in the socket. granian then closes the connection with unread data in it, and the
kernel resets it: a client that sends its whole body before reading the answer (Python's
http.client and requests do) gets a broken pipe or a reset instead of the JSON error,
for any body larger than the sockets' buffers (~2.5 MB here). Reading the rest first
lets the answer arrive, as Werkzeug's development server does anyway.

Only for a caller whose token checked out (service.auth.AUTHENTICATED). A read has no
time limit: for anyone else, a connection that sends headers and then nothing would hold
a worker's thread (two such connections stopped a server of two workers). A caller with
a valid token can hold one as long by sending a valid body slowly, so reading its
unwanted body adds nothing; an unauthenticated caller's 401 is answered, and a large
unread body then cut, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from service.auth import AUTHENTICATED

# Past this much, the connection is cut instead: reading an attacker's 1 GB would cost
# more than a client sending it loses. It is several times the largest body accepted
# (MAX_CONTENT_LENGTH, 2 MiB), so a client that only overshot gets its 413.
DRAIN_LIMIT = 16 * 1024 * 1024
CHUNK = 64 * 1024


class ReadUnreadBody:
    """WSGI middleware: after an error status to an authenticated caller, read what is
    left of the body (up to DRAIN_LIMIT) when the server ends the input stream itself
    (wsgi.input_terminated, as granian does). A stream that does not end itself
    (Werkzeug's development server) would block a read past its end, and that server
    does this on its own."""

    def __init__(self, wsgi_app: Callable):
        self.next = wsgi_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        statuses: list[str] = []

        def recording(status: str, headers, exc_info=None):
            statuses.append(status)
            return start_response(status, headers, exc_info)

        result = self.next(environ, recording)
        if (
            statuses
            and statuses[-1][:1] in "45"
            and environ.get(AUTHENTICATED)
            and environ.get("wsgi.input_terminated")
        ):
            read_rest(environ)
        return result


def read_rest(environ: dict) -> None:
    """Read and drop the rest of the body, at most DRAIN_LIMIT bytes in all."""
    length = environ.get("CONTENT_LENGTH", "")
    if length.isdigit() and int(length) > DRAIN_LIMIT:
        return
    if not length.isdigit() and "HTTP_TRANSFER_ENCODING" not in environ:
        return  # no body
    stream = environ["wsgi.input"]
    left = DRAIN_LIMIT
    try:
        while left > 0:
            chunk = stream.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
    except Exception:  # a client gone meanwhile: its answer has nowhere to go anyway
        return

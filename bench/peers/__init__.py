"""Peer engines the benchmark compares ours with. Each peer module offers
`available() -> str | None` (None when it can run, else the reason it is skipped)."""


class Skip(Exception):
    """A peer cannot run here; the message says why."""

"""Decision ids: random uuid4s, at a fraction of uuid4's cost.

Every decision gets an id (and an allowed read's audit event takes it), so a batch of a
thousand checks would spend more time in `str(uuid.uuid4())` (~2 µs, a system call each)
than in deciding. Ids are drawn here a block at a time: one `os.urandom` call for
BLOCK ids, formatted as uuid4s (122 random bits each, as uuid4's), ~0.4 µs an id.

They are random, not counted: a tenant reads the ids of its own `diagnostics.read`
events, and ids that counted up would tell it how many decisions were made for other
tenants between two of its own (README "Decisions we made").

A forked child starts with none in reserve: it would otherwise hand out the very ids
its parent holds.
"""

from __future__ import annotations

import os

BLOCK = 1024  # ids drawn at a time: one system call, ~0.4 ms of formatting
# A uuid4's variant digit is 8, 9, a or b: two of its four bits are random.
_VARIANT = dict(zip("0123456789abcdef", "89ab" * 4, strict=True))
_reserve: list[str] = []


def _draw_block() -> list[str]:
    digits = os.urandom(BLOCK * 16).hex()
    variant = _VARIANT
    return [
        f"{digits[i : i + 8]}-{digits[i + 8 : i + 12]}-4{digits[i + 12 : i + 15]}-"
        f"{variant[digits[i + 15]]}{digits[i + 16 : i + 19]}-{digits[i + 19 : i + 31]}"
        for i in range(0, BLOCK * 32, 32)
    ]


def new_id() -> str:
    while True:  # another thread may empty the reserve between the refill and the pop
        try:
            return _reserve.pop()
        except IndexError:
            _reserve.extend(_draw_block())


os.register_at_fork(after_in_child=_reserve.clear)

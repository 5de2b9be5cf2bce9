"""Decision ids: unique, shaped like a uuid4, at a fraction of uuid4's cost.

Every decision gets an id (and an allowed read's audit event takes it), so a batch of a
thousand checks would spend more time in `str(uuid.uuid4())` than in deciding. An id
here is a random prefix drawn once per process (74 random bits) and a counter. A forked
child draws its own prefix, so no two processes share one.
"""

from __future__ import annotations

import itertools
import os

_prefix = ""
_counter = itertools.count()


def _draw() -> None:
    global _prefix, _counter
    digits = os.urandom(10).hex()
    variant = "89ab"[int(digits[15], 16) & 3]
    _prefix = f"{digits[:8]}-{digits[8:12]}-4{digits[12:15]}-{variant}{digits[16:19]}-"
    _counter = itertools.count(int(digits[19], 16) << 40)  # the last group counts up


def new_id() -> str:
    return f"{_prefix}{next(_counter):012x}"


_draw()
os.register_at_fork(after_in_child=_draw)

"""Decision ids (service/ids.py): unique, random uuid4s, never shared with a forked worker."""

from __future__ import annotations

import os
import uuid

from service import ids
from service.ids import new_id


def test_ids_are_unique_and_read_as_uuid4():
    drawn = [new_id() for _ in range(3 * ids.BLOCK)]  # across refills of the reserve
    assert len(set(drawn)) == len(drawn)
    for text in drawn:  # every one: a wrong variant for one random digit in 16 shows only so
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122, text


def test_the_variant_digit_keeps_its_two_random_bits():
    """uuid4 has 122 random bits: the variant digit is any of 8, 9, a and b."""
    variants = {new_id()[19] for _ in range(ids.BLOCK)}
    assert variants == set("89ab")


def test_ids_do_not_count_up():
    """A tenant sees the ids of its own reads: ids that counted would tell it how many
    decisions were made for others in between."""
    numbers = [uuid.UUID(new_id()).int for _ in range(1000)]
    steps = {later - earlier for earlier, later in zip(numbers, numbers[1:], strict=False)}
    assert len(steps) == len(numbers) - 1  # no common stride
    groups = [uuid.UUID(int=n).hex[:8] for n in numbers]
    assert len(set(groups)) > 900  # no shared prefix either (32 random bits each)


def test_a_forked_worker_does_not_hand_out_its_parents_ids():
    new_id()  # the parent now holds a reserve of ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first ids and leave at once
        os.write(write, ",".join(new_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child_ids = set(os.read(read, 100_000).decode().split(","))
    os.close(read)
    parent_ids = {new_id() for _ in range(100)}
    assert len(child_ids) == 100
    assert not child_ids & parent_ids

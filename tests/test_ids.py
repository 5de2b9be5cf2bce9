"""Decision ids (service/ids.py): unique, uuid4-shaped, distinct across forked workers."""

from __future__ import annotations

import os
import uuid

from service.ids import new_id


def test_ids_are_unique_and_read_as_uuid4():
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:100]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_worker_draws_its_own_prefix():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first id and leave at once
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child_id = os.read(read, 100).decode()
    os.close(read)
    assert child_id.rsplit("-", 1)[0] != new_id().rsplit("-", 1)[0]

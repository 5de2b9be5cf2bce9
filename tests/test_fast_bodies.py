"""The fast decoders of the decision bodies (service/fast_bodies.py) accept nothing the
reference path (orjson + the OpenAPI schema) refuses, and read what they accept alike."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import fast_bodies
from service.decision_endpoint import ROUTES
from service.errors import BadRequest
from service.validation import validate, without_nulls
from tests.served import ROOT

# Values near every bound and pattern of the DecisionRequest schema, and of other types.
texts = st.one_of(
    st.text(max_size=3),
    st.sampled_from(
        ["read", "Read", "read\n", "r", "9read", "diagnostics/signInLogs", "diagnostics/", "x" * 64]
    ),
    st.sampled_from(["diagnostics/a.b-c_d", "diagnostics/bad name", "a" * 65, "a" * 129, "a" * 257]),
)
values = st.one_of(
    texts, st.booleans(), st.none(), st.integers(-(2**63), 2**63 - 1), st.lists(st.integers(0, 9), max_size=2)
)
keys = st.sampled_from(
    ["principal", "tenant_id", "action", "resource", "support_request_id", "explain", "extra"]
)
near_valid = st.fixed_dictionaries(
    {
        "principal": st.sampled_from(["eve", "eve", "eve", "", "a" * 256, "a" * 257]),
        "tenant_id": st.sampled_from(["contoso", "contoso", "contoso", "", "t" * 128, "t" * 129]),
        "action": st.sampled_from(["read", "read", "read", "write", "Read", "read\n", "r" * 64, "r" * 65]),
        "resource": st.sampled_from(
            [
                "diagnostics/signInLogs",
                "diagnostics/signInLogs",
                "diagnostics/a b",
                "logs/x",
                "diagnostics/x\n",
            ]
        ),
    },
    optional={
        "support_request_id": st.one_of(st.just("sr-1"), values),
        "explain": st.one_of(st.booleans(), values),
    },
)
checks = st.one_of(st.dictionaries(keys, values, max_size=7), near_valid, near_valid)
bodies = st.one_of(
    checks,
    st.fixed_dictionaries({"checks": st.lists(near_valid, max_size=3)}),
    st.fixed_dictionaries({"checks": st.lists(checks, max_size=3)}),
    st.dictionaries(st.sampled_from(["checks", "other"]), st.lists(checks, max_size=2), max_size=2),
)


def reference(schema: str, raw: bytes):
    try:
        return validate(schema, orjson.loads(raw))
    except BadRequest:
        return None


@settings(max_examples=400, deadline=None)
@given(body=bodies, schema=st.sampled_from(["DecisionRequest", "DecisionBatch"]))
def test_what_the_fast_decoder_accepts_the_schema_accepts_alike(body, schema):
    raw = orjson.dumps(body)
    try:
        decoded = fast_bodies.decode(schema, raw)
    except Exception:
        return  # refused: the reference path gives the error
    assert reference(schema, raw) == fast_bodies.as_plain(decoded) == without_nulls(body)


def test_valid_bodies_take_the_fast_path():
    check = {
        "principal": "eve",
        "tenant_id": "contoso",
        "action": "read",
        "resource": "diagnostics/signInLogs",
    }
    for schema, body in (
        ("DecisionRequest", {**check, "explain": True}),
        ("DecisionRequest", {**check, "support_request_id": None, "explain": None}),  # = left out
        ("DecisionBatch", {"checks": [check] * 3}),
    ):
        decoded = fast_bodies.decode(schema, orjson.dumps(body))
        assert fast_bodies.as_plain(decoded) == without_nulls(body)


@pytest.mark.parametrize(
    "field",
    [
        {"type": "integer"},
        {"type": ["string", "integer"]},
        {"type": "array", "items": {"type": "string", "pattern": "^a"}},
        {
            "type": "array",
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/DecisionRequest"}},
        },
    ],
    ids=["integer", "string or integer", "pattern on array items", "array of arrays"],
)
def test_a_schema_the_decoder_cannot_follow_is_refused(monkeypatch, field):
    """Shapes whose checks the decoder could not make (or make completely) are refused
    when it is built, so a schema change cannot open a gap in what it checks."""
    schemas = {"Odd": {"type": "object", "additionalProperties": False, "properties": {"n": field}}}
    monkeypatch.setattr(fast_bodies, "_schemas", lambda: schemas)
    fast_bodies._struct.cache_clear()
    try:
        with pytest.raises(ValueError, match="Odd.n"):
            fast_bodies._struct("Odd")
    finally:
        fast_bodies._struct.cache_clear()


def test_patterns_are_checked_past_the_cache_of_matched_values(monkeypatch):
    """Values that matched are remembered (up to a bound); a value that does not match is
    refused whether or not the cache is full, and the cache stops growing at its bound."""
    monkeypatch.setattr(fast_bodies, "MATCHED_BOUND", 3)
    fast_bodies._struct.cache_clear()
    fast_bodies.decoder.cache_clear()
    try:

        def body(action: str) -> bytes:
            check = {
                "principal": "eve",
                "tenant_id": "contoso",
                "action": action,
                "resource": "diagnostics/c",
            }
            return orjson.dumps({"checks": [check]})

        for n in range(5):
            fast_bodies.decode("DecisionBatch", body(f"act{n}"))
        action_pattern = dict(fast_bodies._CHECKS[fast_bodies._struct("DecisionRequest")][0])["action"]
        assert len(action_pattern.matched) == 3
        for refused in ("a b", "act0\n", "Act0"):
            with pytest.raises(ValueError, match="action"):
                fast_bodies.decode("DecisionBatch", body(refused))
    finally:
        fast_bodies._struct.cache_clear()
        fast_bodies.decoder.cache_clear()


def test_the_decision_bodies_are_ready_before_the_first_request(tmp_path):
    """A worker's first decision used to build the body types and validators from the
    OpenAPI document (~265 ms on a slow host, a stall each worker's first caller met).
    create_app builds them; a fresh interpreter, as a worker is, shows it."""
    script = """
import sys
from service import create_app, fast_bodies, validation
create_app({"TESTING": True, "DATABASE_URL": sys.argv[1], "JWT_SECRET": "s" * 32,
            "DECISION_LOG": sys.argv[2]})
print(fast_bodies.decoder.cache_info().currsize, validation._validator.cache_info().currsize)
"""
    database = f"sqlite:///{tmp_path / 'fresh.db'}"
    done = subprocess.run(
        [sys.executable, "-c", script, database, str(tmp_path / "decisions.log")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    decoders, validators = map(int, done.stdout.split())
    assert (decoders, validators) == (len(ROUTES), len(ROUTES))

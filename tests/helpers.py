"""Small helpers shared by several test modules."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import jwt
import peewee
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from service.errors import PolicyError
from service.policy import REPO_POLICY_DIR, load_policy

DIRECTORY_FILE = Path(__file__).with_name("directory.yaml")  # the directory every test starts from


def provider_directory(provider: str) -> dict:
    """tests/directory.yaml with `provider` as its provider tenant."""
    document = yaml.safe_load(DIRECTORY_FILE.read_text(encoding="utf-8"))
    document["provider_tenant"] = provider
    for assignment in document["role_assignments"]:
        if assignment["tenant"] == "provider":
            assignment["tenant"] = provider
    return document


def copy_policies(tmp_path: Path, name: str = "policies") -> Path:
    """A copy of the shipped policy directory, to change or break."""
    target = tmp_path / name
    shutil.copytree(REPO_POLICY_DIR, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first `old` in a file; fails if it is not there."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def load_error(directory: Path) -> str:
    """The message of the PolicyError loading `directory` raises (it must raise one)."""
    with pytest.raises(PolicyError) as caught:
        load_policy(directory)
    return caught.value.message


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8").rstrip("\n") + "\n" + text, encoding="utf-8")


def corrupt_sqlite_file(path: Path) -> None:
    """Write garbage over a SQLite file's 100-byte header (a stray write, a bad disk):
    opening it then fails with sqlite3's bare DatabaseError "file is not a database".
    Checkpoints first, so that no good copy of the first page waits in the write-ahead
    log. Close the app's connection before: an open one may go on from its cache."""
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as file:
        file.write(b"\xa5" * 100)


def app_config(tmp_path: Path, database_url: str, secret: str, **extra) -> dict:
    """A test app's configuration on `database_url`, its decision log in `tmp_path`."""
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "JWT_SECRET": secret,
        "DECISION_LOG": str(tmp_path / "decisions.log"),
        **extra,
    }


class FakeMonotonic:
    """A stand-in for a module's `time`, whose monotonic clock moves only when a test
    moves `now` (retry intervals and checkpoint intervals without real waits)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def parse_time(text: str) -> datetime:
    """An API time (ISO 8601 with a Z)."""
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def error_of(response) -> dict:
    """The error object of an error answer (and that it has the API's shape)."""
    body = response.get_json()
    assert isinstance(body, dict) and "error" in body, response.data
    assert set(body["error"]) >= {"code", "message"}
    return body["error"]


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_jwks(path: Path, keys: list[tuple[str, object, str]]) -> Path:
    """keys: (kid, private key, alg)."""
    entries = []
    for kid, private, alg in keys:
        algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
        jwk = algorithm.to_jwk(private.public_key(), as_dict=True)
        jwk.update({"kid": kid, "use": "sig", "alg": alg})
        entries.append(jwk)
    path.write_text(json.dumps({"keys": entries}), encoding="utf-8")
    return path


@contextmanager
def counting_queries(monkeypatch) -> Iterator[list]:
    """The queries peewee runs inside the block, in a list filled as they run."""
    queries: list = []
    execute = peewee.Database.execute

    def counting(self, query, *args, **kwargs):
        queries.append(query)
        return execute(self, query, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(peewee.Database, "execute", counting)
        yield queries

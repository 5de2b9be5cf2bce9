"""Our decision engine, in-process.

THE adapter: `open_engine` is the only place the benchmark touches our decision path.
When the decision engine changes, change `open_engine` (and nothing else in bench/):
it must return an object whose `check(c)` answers True (allow) / False (deny) for one
`bench.dataset.Check`, evaluated by the same code the HTTP API runs, without the
decision log and audit write that the API adds after deciding.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bench.dataset import Check

NAME = "ours"


class OursEngine:
    def __init__(self, db_path: Path, scratch: Path, secret: str):
        from models import database
        from service import create_app
        from service.decisions import Check as ServiceCheck
        from service.decisions import decide

        self.app = create_app(
            {
                "DATABASE_URL": f"sqlite:///{db_path}",
                "JWT_SECRET": secret,
                "DECISION_LOG": str(scratch / "decisions-inprocess.log"),
            }
        )
        self._ctx = self.app.app_context()
        self._ctx.push()
        database.connect(reuse_if_open=True)
        self._database = database
        self._policy = self.app.extensions["policy_store"].current
        self._provider = self.app.config["PROVIDER_TENANT"]
        self._decide = decide
        self._check_type = ServiceCheck
        # Since 0d132b9 decisions read an in-memory index that is synced before each
        # request (service/api/decisions.py); before that, decide() queried the database.
        self._index = self.app.extensions.get("decision_index")

    def check(self, c: Check) -> bool:
        check = self._check_type(c.principal, c.tenant_id, c.action, c.resource)
        if self._index is None:
            return self._decide(self._policy, check, datetime.now(UTC), self._provider).allowed
        self._index.sync()  # what the API does once per request
        return self._decide(self._policy, self._index, check, datetime.now(UTC), self._provider).allowed

    def close(self) -> None:
        if not self._database.is_closed():
            self._database.close()
        self._ctx.pop()


def open_engine(db_path: Path, scratch: Path, secret: str) -> OursEngine:
    """Our engine over the SQLite database the data set was loaded into."""
    return OursEngine(db_path, scratch, secret)

"""Our decision engine, in-process.

THE adapter: `open_engine` is the only place the benchmark touches our decision path.
When the decision engine changes, change `open_engine` (and nothing else in bench/):
it must return an object whose `check(c)` answers True (allow) / False (deny) for one
`bench.dataset.Check`, evaluated by the same code the HTTP API runs, without the
decision log and audit write that the API adds after deciding.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from bench.dataset import Check

NAME = "ours"


class OursEngine:
    def __init__(self, db_path: Path, scratch: Path, secret: str):
        from models import database
        from service import build_app
        from service.decisions import Check as ServiceCheck
        from service.decisions import decide

        self.app = build_app(
            {
                "DATABASE_URL": f"sqlite:///{db_path}",
                "JWT_SECRET": secret,
                "DECISION_LOG": str(scratch / "decisions-inprocess.log"),
                # The whole index loaded before the first check, as before 8a8c429 (a
                # served worker loads it after it is ready; this measures the loaded engine).
                "DECISION_INDEX_WARM_START": False,
            }
        )
        self._ctx = self.app.app_context()
        self._ctx.push()
        database.connect(reuse_if_open=True)
        self._database = database
        self._policy = self.app.extensions["policy_store"].current
        # The provider tenant: SUPPORT_ACCESS_PROVIDER_TENANT, else the one the directory named.
        self._provider = self.app.extensions["decision_index"].provider
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

    # --- a change taking effect (bench.run.effect_time) -----------------------------

    def grant(self, engineer: str, tenant: str) -> float:
        """File and approve a same-tenant request through the workflow (database work,
        not timed), then return the seconds of *engine* time until a decision allows:
        the index applying the committed change, plus that decision."""
        from service import workflow

        now = datetime.now(UTC)
        admin = self._viewer(f"admin-{tenant}")
        body = {"tenant_id": tenant, "title": "bench"}
        ticket = workflow.create_ticket(self._policy, admin, body, now)
        engineer_view = self._viewer(engineer)
        workflow.assign_ticket(self._policy, engineer_view, ticket.id, engineer, now, self._provider)
        body = {"support_request_id": ticket.id, "justification": "bench"}
        self._request = workflow.create_access_request(self._policy, engineer_view, body, now, self._provider)
        workflow.approve(self._policy, admin, self._request.id, tenant, now)
        self._admin = admin
        return self._engine_time(engineer, tenant, expect=True)

    def revoke(self, engineer: str, tenant: str) -> float:
        from service import workflow

        workflow.revoke(self._policy, self._admin, self._request.id, datetime.now(UTC))
        return self._engine_time(engineer, tenant, expect=False)

    def _engine_time(self, engineer: str, tenant: str, expect: bool) -> float:
        category = sorted(self._policy.categories)[0]
        check = self._check_type(engineer, tenant, "read", f"diagnostics/{category}")
        t0 = time.perf_counter()
        self._index.sync()
        allowed = self._decide(self._policy, self._index, check, datetime.now(UTC), self._provider).allowed
        spent = time.perf_counter() - t0
        if allowed != expect:
            raise AssertionError(f"the change did not take effect (allowed={allowed})")
        return spent

    def _viewer(self, principal: str):
        from service.auth import Caller
        from service.viewer import viewer_for

        return viewer_for(self._policy, Caller(principal, None), self._provider)

    def close(self) -> None:
        if not self._database.is_closed():
            self._database.close()
        self._ctx.pop()


def open_engine(db_path: Path, scratch: Path, secret: str) -> OursEngine:
    """Our engine over the SQLite database the data set was loaded into."""
    return OursEngine(db_path, scratch, secret)

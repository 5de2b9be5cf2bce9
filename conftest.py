"""Collect policy test suites (policies/tests/*_test.yaml) as pytest items, one per case,
so a failing policy case fails `make test` like any other test."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import PolicyError
from service.policy_tests import SuiteError, SuiteRunner, load_suite

_runners: dict[Path, SuiteRunner] = {}


def pytest_collect_file(parent, file_path: Path):
    # Only suites that sit in a policy directory's tests/ folder (beside roles.yaml); a
    # *_test.yml is collected to be refused, as `policy test` refuses it (load_suite).
    meant = file_path.name.lower().endswith(("_test.yaml", "_test.yml"))
    if meant and (file_path.parent.parent / "roles.yaml").is_file():
        return PolicySuiteFile.from_parent(parent, path=file_path)
    return None


def pytest_sessionfinish(session, exitstatus):
    for runner in _runners.values():
        runner.close()
    _runners.clear()


class PolicySuiteFile(pytest.File):
    def collect(self):
        try:
            suite = load_suite(self.path)
        except SuiteError as exc:  # one line, as `policy test` says it, not a traceback
            raise self.CollectError(f"invalid suite: {exc}") from None
        for case in suite.cases:
            yield PolicyCaseItem.from_parent(self, name=case.name, suite=suite, case=case)


class PolicyCaseItem(pytest.Item):
    def __init__(self, *, suite, case, **kwargs):
        super().__init__(**kwargs)
        self.suite, self.case = suite, case

    def runtest(self):
        policy_dir = self.path.parent.parent
        if policy_dir not in _runners:
            _runners[policy_dir] = SuiteRunner(policy_dir)
        result = _runners[policy_dir].run(self.suite, self.case)
        if not result.passed:
            raise PolicyCaseFailure(result.report())

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, PolicyCaseFailure):
            return str(excinfo.value)
        if isinstance(excinfo.value, SuiteError):  # a fixture the service refuses
            return f"invalid suite: {excinfo.value}"
        if isinstance(excinfo.value, PolicyError):
            return f"invalid policy: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"{self.path.name}::{self.name}"


class PolicyCaseFailure(Exception):
    pass

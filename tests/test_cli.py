"""The operator and security-team commands (`flask --app service ...`), as the runner
fixture invokes them: what they print and the exit codes scripts rely on."""

from __future__ import annotations

from pathlib import Path

import jwt
import yaml

from service.policy import REPO_POLICY_DIR
from service.policy_tests import load_suite
from tests.conftest import DIRECTORY_FILE, SECRET, auth


def test_policy_test_filter_matches_a_suites_name(runner):
    """--filter: "cases whose suite or case name contains TEXT". A suite's name that is
    in no case name and not in its file name still selects all of its cases."""
    suite = load_suite(REPO_POLICY_DIR / "tests" / "lifecycle_test.yaml")
    text = "timing, revocation"
    assert text in suite.name and text not in suite.path.name
    assert not any(text in case.name for case in suite.cases)

    result = runner.invoke(args=["policy", "test", "--filter", text])

    assert result.exit_code == 0, result.output
    assert f"{len(suite.cases)} passed, 0 failed" in result.output, result.output


def test_policy_diff_without_a_decision_log_yet_exits_2_not_1(runner, app):
    """The default source is the decision log; before the first decision there is no
    file. That is an unusable requests file (2), not "changes found" (1), and no traceback."""
    assert not Path(app.config["DECISION_LOG"]).exists()
    policies = str(REPO_POLICY_DIR)

    result = runner.invoke(args=["policy", "diff", policies, policies])

    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and app.config["DECISION_LOG"] in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_token_lasts_an_hour_by_default_and_is_accepted(runner, client):
    result = runner.invoke(args=["token", "--sub", "ops", "--tenant", "provider"])
    assert result.exit_code == 0, result.output
    minted = result.output.strip()

    claims = jwt.decode(minted, SECRET, algorithms=["HS256"], audience="support-access")

    assert claims["exp"] - claims["iat"] == 3600
    assert (claims["sub"], claims["tid"]) == ("ops", "provider")
    assert client.get("/v1/policy", headers={"Authorization": f"Bearer {minted}"}).status_code == 200


def test_sweep_says_how_many_requests_it_expired(runner, client, clock, access_request):
    clock.advance(hours=25)  # past the 24 h a pending request waits

    first = runner.invoke(args=["sweep"])
    again = runner.invoke(args=["sweep"])

    assert first.exit_code == 0 and first.output == "1 requests expired or completed\n", first.output
    assert again.exit_code == 0 and again.output == "0 requests expired or completed\n", again.output
    seen = client.get(f"/v1/access-requests/{access_request['id']}", headers=auth("alice", "contoso"))
    assert seen.get_json()["status"] == "expired"


def test_an_import_that_lost_a_race_for_the_provider_tenant_names_the_file(bare_app, tmp_path, monkeypatch):
    """The provider tenant moved by another import while this one read its file: the
    refusal comes from the import itself, not from reading the file, and names the file
    as every refused import does."""
    from models import DirectorySetting
    from service import directory

    document = yaml.safe_load(DIRECTORY_FILE.read_text(encoding="utf-8"))
    del document["provider_tenant"]  # the provider tenant is whichever the database holds
    path = tmp_path / "directory.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    read = directory.read_directory_file

    def read_while_another_import_moves_the_provider(*args, **kwargs):
        parsed = read(*args, **kwargs)
        DirectorySetting.create(name=directory.PROVIDER_SETTING, value="msft")
        return parsed

    monkeypatch.setattr(directory, "read_directory_file", read_while_another_import_moves_the_provider)

    result = bare_app.test_cli_runner().invoke(args=["directory", "import", str(path)])

    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {path}: the provider tenant became 'msft'"), result.output

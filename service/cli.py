"""Operator and security-team commands: `flask --app service ...`."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from datetime import timedelta

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from models import database
from service.clock import system_now

directory_cli = AppGroup("directory", help="Tenants and role assignments.")
policy_cli = AppGroup("policy", help="Check the policies under policies/.")
audit_cli = AppGroup("audit", help="The audit log.")

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 2  # the store cannot be opened, or no policy loads (_needs_store)
EXIT_INVALID_POLICY = 3
EXIT_CASE_FAILED = 4
EXIT_COVERAGE = 5
EXIT_NO_CASES = 6


def _needs_store(what: str, needs_policy: bool = False, create: bool = True) -> Callable:
    """For a command that works on the store: when the store cannot be opened (or, with
    `needs_policy`, the configured policy does not load), say so in a line and exit 2,
    never a traceback (an operator's script tells that from a failing check by the code).
    Under create_app's stand-in (service/starting.py) the error is already known.
    create=False: a SQLite file that does not exist is such an error, not created."""
    from service.errors import DATABASE_ERRORS, PolicyNotLoaded, Unavailable, store_failed

    def unavailable(exc: Exception) -> None:
        lines = (getattr(exc, "message", None) or str(exc)).strip().splitlines()
        click.echo(f"{what}: {lines[0] if lines else type(exc).__name__}", err=True)
        sys.exit(EXIT_UNAVAILABLE)

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(*args, **kwargs):
            with _app_with_store(create).app_context():
                start_error = current_app.extensions.get("start_error")
                if start_error is not None and (needs_policy or not isinstance(start_error, PolicyNotLoaded)):
                    unavailable(start_error)
                try:
                    return command(*args, **kwargs)
                except DATABASE_ERRORS as exc:
                    if not store_failed(exc):
                        raise
                    unavailable(exc)
                except Unavailable as exc:  # the read journal cannot be read
                    unavailable(exc)

        return run

    return decorate


def _app_with_store(create: bool) -> Flask:
    """The app a store command runs in: the current one, or under `flask --app service`,
    whose app has not opened the store (service.command_app), the whole app built now."""
    from service import CommandConfigError
    from service.errors import ConfigError

    open_store = current_app.extensions.get("open_store")
    if open_store is None:
        return current_app._get_current_object()
    try:
        return open_store(create)
    except ConfigError as exc:  # no token keys, a blank secret, an unreadable JWKS
        raise CommandConfigError(exc.message) from None


@directory_cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--prune", is_flag=True, help="Also remove assignments the file no longer lists.")
@_needs_store("cannot import the directory", needs_policy=True)
def directory_import(file: str, prune: bool) -> None:
    """Import tenants and role assignments from a YAML file (idempotent)."""
    from service import directory
    from service.errors import ApiError

    store = current_app.extensions["policy_store"]
    configured = current_app.config["PROVIDER_TENANT"]
    with database.connection_context():
        before = directory.provider_tenant(None)
        try:
            parsed = directory.read_directory_file(file, store.current, configured, complete=prune)
            actor, now = "cli:directory-import", current_app.config["CLOCK"]()
            counts = directory.import_directory(parsed, prune, store.current, actor, now, configured)
        except ApiError as exc:  # a bad file (400), or a provider tenant in use (409)
            message = exc.message if exc.message.startswith(f"{file}:") else f"{file}: {exc.message}"
            raise click.ClickException(message) from exc
        after = directory.provider_tenant(None)
    summary = ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in counts.items())
    click.echo(f"imported {file}: {summary}")
    if after != before:  # every worker's engineers, operators and decision clients are now its
        click.echo(f"the provider tenant is now {after!r} (was {before!r})")


@policy_cli.command("check")
@click.argument("path", required=False, type=click.Path(file_okay=False), metavar="[DIR]")
@click.option("--strict", is_flag=True, help="Treat lint warnings as errors.")
def policy_check(path: str | None, strict: bool) -> None:
    """Validate a policy directory (default: the configured one) and lint it."""
    from service.policy_lint import lint

    directory = path or current_app.config["POLICY_DIR"]
    policy = _load_or_exit(directory)
    warnings = lint(policy)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if warnings and strict:
        click.echo(f"invalid policy: {len(warnings)} warnings with --strict", err=True)
        sys.exit(EXIT_INVALID_POLICY)
    click.echo(
        f"ok: {directory} version {policy.version}, {len(policy.roles)} roles, {len(warnings)} warnings"
    )


@policy_cli.command("test")
@click.argument("path", required=False, type=click.Path(file_okay=False), metavar="[DIR]")
@click.option("--filter", "text", help="Run only cases whose suite or case name contains TEXT.")
@click.option("--coverage", is_flag=True, help="Report which rules the suites exercised.")
@click.option(
    "--threshold", type=click.FloatRange(0, 100), metavar="PCT", help="Fail below this coverage percent."
)
def policy_test(path: str | None, text: str | None, coverage: bool, threshold: float | None) -> None:
    """Validate the policies and run their YAML test suites (policies/tests/*_test.yaml).

    Exit codes: 0 all pass, 3 invalid policy or suite, 4 a case failed, 5 coverage below
    the threshold, 6 no case ran (no suite, or --filter matched none: a typo in CI
    must not pass).
    """
    from service.errors import PolicyError
    from service.policy_tests import SuiteRunner, coverage_report, load_suite, suite_paths

    directory = path or current_app.config["POLICY_DIR"]
    _load_or_exit(directory)
    try:
        suites = [load_suite(p) for p in suite_paths(directory)]
    except PolicyError as exc:
        click.echo(f"invalid suite: {exc.message}", err=True)
        sys.exit(EXIT_INVALID_POLICY)
    runner = SuiteRunner(directory, record_coverage=coverage or threshold is not None)
    passed = failed = 0
    try:
        for suite in suites:
            for case in suite.cases:
                if text and text not in f"{suite.name} {case.name}" and text not in suite.path.name:
                    continue
                try:
                    result = runner.run(suite, case)
                except PolicyError as exc:
                    click.echo(f"invalid suite: {exc.message}", err=True)
                    sys.exit(EXIT_INVALID_POLICY)
                if result.passed:
                    passed += 1
                else:
                    failed += 1
                    click.echo(result.report())
    finally:
        runner.close()
    click.echo(f"{passed} passed, {failed} failed")
    if runner.coverage is not None:
        percent, lines = coverage_report(runner.policy, runner.coverage)
        click.echo("rule coverage:")
        for line in lines:
            click.echo(f"  {line}")
    if failed:
        sys.exit(EXIT_CASE_FAILED)
    if not passed:
        where = f"matches --filter {text!r}" if text else f"is in {directory}/tests"
        click.echo(f"no test case ran: none {where}", err=True)
        sys.exit(EXIT_NO_CASES)
    if threshold is not None and percent < threshold:
        click.echo(f"coverage {percent:.1f}% is below the threshold {threshold:g}%", err=True)
        sys.exit(EXIT_COVERAGE)


@policy_cli.command("diff")
@click.argument("old_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("new_dir", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--log",
    "log_file",
    type=click.Path(dir_okay=False, exists=True),
    help="Decision log (JSON lines) or a YAML/JSON list of requests; default: the decision log.",
)
@_needs_store("cannot replay the decisions")
def policy_diff(old_dir: str, new_dir: str, log_file: str | None) -> None:
    """Replay recorded decisions under OLD_DIR and NEW_DIR and print every change.

    Exit code 0 no change, 1 changes found, 2 unusable requests file or the store cannot
    be opened, 3 a policy is invalid.
    """
    from service.directory import provider_tenant
    from service.errors import BadRequest
    from service.policy_diff import format_changes, read_requests, replay

    old, new = _load_or_exit(old_dir), _load_or_exit(new_dir)
    source = log_file or current_app.config["DECISION_LOG"]
    if not source:
        click.echo("error: no decision log (SUPPORT_ACCESS_DECISION_LOG is empty): give --log FILE", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        checks = read_requests(source)
    except (BadRequest, OSError) as exc:
        # Not 1: that means "changes found", and a CI gate must tell the two apart.
        click.echo(f"error: {getattr(exc, 'message', exc)}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    with database.connection_context():
        provider = provider_tenant(current_app.config["PROVIDER_TENANT"])
        changes = replay(old, new, checks, current_app.config["CLOCK"](), provider)
    for line in format_changes(changes, len(checks), old, new):
        click.echo(line)
    sys.exit(1 if changes else 0)


def _load_or_exit(directory):
    from service.errors import PolicyError
    from service.policy import load_policy

    try:
        return load_policy(directory)
    except PolicyError as exc:  # its message names the file; this, which directory
        click.echo(f"invalid policy in {directory}: {exc.message}", err=True)
        sys.exit(EXIT_INVALID_POLICY)


def _anchors(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
    from service.audit import parse_anchor

    for value in values:
        try:
            parse_anchor(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return values


@audit_cli.command("verify")
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    callback=_anchors,
    metavar="SEQ:HASH",
    help="A head an earlier run printed, kept outside the database: it must still be in the chain.",
)
@_needs_store("cannot read the audit log", create=False)  # a mistyped path is no empty log
def audit_verify(anchors: tuple[str, ...]) -> None:
    """Check the audit log's hash chain; exit 1 naming the first bad event, 2 if the
    store cannot be opened or fails while the chain is read (which says nothing about
    the chain). On success it prints the head (SEQ:HASH of the last event): kept
    outside the database and passed back with --anchor, it shows whether events were
    later removed from the end by someone who also rewrote the head row."""
    from service.audit import verify_chain

    with database.connection_context():
        report = verify_chain(anchors=anchors)
    if report.ok:
        head = f"; head {report.head}" if report.head else ""
        click.echo(f"ok: {report.checked} events, chain intact{head}")
        return
    where = f" at {report.bad_event}" if report.bad_event else ""
    click.echo(f"audit log tampered{where}: {report.problem}", err=True)
    sys.exit(1)


MAX_TOKEN_SECONDS = 10 * 366 * 24 * 3600  # a development token; more overflows a date


@click.command("token")
@with_appcontext
@click.option("--sub", required=True, help="Principal id (the directory's principal).")
@click.option("--tenant", "tenant", required=True, help="The tenant signed in to (tid).")
@click.option(
    "--ttl",
    default=3600,
    show_default=True,
    type=click.IntRange(min=1, max=MAX_TOKEN_SECONDS),
    help="Lifetime in seconds (at most ten years).",
)
def token(sub: str, tenant: str, ttl: int) -> None:
    """Mint a development HS256 token (needs SUPPORT_ACCESS_JWT_SECRET)."""
    from service import CommandConfigError
    from service.auth import CLAIM_LENGTHS, mint_token

    secret = current_app.config["JWT_SECRET"]
    if not secret or not secret.strip():  # the service refuses a blank one too
        raise CommandConfigError("SUPPORT_ACCESS_JWT_SECRET is not set, or only whitespace")
    if not sub.strip():
        raise click.BadParameter("must not be empty (the service refuses such a token)", param_hint="--sub")
    for option, value, claim in (("--sub", sub, "sub"), ("--tenant", tenant, "tid")):
        if len(value) > CLAIM_LENGTHS[claim]:
            message = f"at most {CLAIM_LENGTHS[claim]} characters (the service refuses more)"
            raise click.BadParameter(message, param_hint=option)
    click.echo(mint_token(secret, sub, tenant, timedelta(seconds=ttl), system_now()))


@click.command("sweep")
@with_appcontext
@_needs_store("cannot sweep")
def sweep() -> None:
    """Apply due expiries now (decisions never wait for this)."""
    from service.workflow import sweep as run_sweep

    with database.connection_context():
        count = run_sweep(current_app.config["CLOCK"]())
    click.echo(f"{count} requests expired or completed")


@click.command("serve")
@click.option("--host", show_default="127.0.0.1")
@click.option("--port", type=click.IntRange(1, 65535), show_default="$PORT or 5000")
@click.option("--workers", type=click.IntRange(min=1), show_default="one per core")
@click.option("--threads", default=1, type=click.IntRange(min=1), show_default=True, help="Per worker.")
def serve(host: str | None, port: int | None, workers: int | None, threads: int) -> None:
    """Serve in production, as `make serve` does: granian workers and the read importer.
    Configured by the SUPPORT_ACCESS_* environment (README "Configuration")."""
    # Imported here: at the top, `python -m service.serve` would find itself imported
    # already (service imports this module), and runpy warns about that.
    from service import serve as serving

    # Handed over to `python -m service.serve`, as `make serve` runs it: the workers are
    # forked from the server process and inherit its modules, and this one has imported
    # prometheus_client before the server's metrics directory was set.
    argv = serving.serve_command(host, port, workers, threads)
    os.execv(argv[0], argv)


def init_app(app: Flask) -> None:
    for command in (directory_cli, policy_cli, audit_cli, token, sweep, serve):
        app.cli.add_command(command)

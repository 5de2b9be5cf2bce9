"""Operator and security-team commands: `flask --app service ...`."""

from __future__ import annotations

import sys
from datetime import timedelta

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from models import database
from service.clock import system_now

directory_cli = AppGroup("directory", help="Tenants and role assignments.")
policy_cli = AppGroup("policy", help="Check the policies under policies/.")
audit_cli = AppGroup("audit", help="The audit log.")

EXIT_INVALID_POLICY = 3


@directory_cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--prune", is_flag=True, help="Also remove assignments the file no longer lists.")
def directory_import(file: str, prune: bool) -> None:
    """Import tenants and role assignments from a YAML file (idempotent)."""
    from service import directory
    from service.errors import BadRequest

    store = current_app.extensions["policy_store"]
    provider = current_app.config["PROVIDER_TENANT"]
    with database.connection_context():
        try:
            parsed = directory.read_directory_file(file, store.current, provider)
        except BadRequest as exc:
            raise click.ClickException(exc.message) from exc
        counts = directory.import_directory(
            parsed, prune, "cli:directory-import", current_app.config["CLOCK"]()
        )
    summary = ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in counts.items())
    click.echo(f"imported {file}: {summary}")


@policy_cli.command("check")
@click.argument("path", required=False, type=click.Path(file_okay=False))
def policy_check(path: str | None) -> None:
    """Validate a policy directory (default: the configured one)."""
    from service.errors import PolicyError
    from service.policy import load_policy

    directory = path or current_app.config["POLICY_DIR"]
    try:
        policy = load_policy(directory)
    except PolicyError as exc:
        click.echo(f"invalid policy: {exc.message}", err=True)
        sys.exit(EXIT_INVALID_POLICY)
    click.echo(f"ok: {directory} version {policy.version}, {len(policy.roles)} roles")


@audit_cli.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; exit 1 naming the first bad event."""
    from service.audit import verify_chain

    with database.connection_context():
        report = verify_chain()
    if report.ok:
        click.echo(f"ok: {report.checked} events, chain intact")
        return
    where = f" at {report.bad_event}" if report.bad_event else ""
    click.echo(f"audit log tampered{where}: {report.problem}", err=True)
    sys.exit(1)


@click.command("token")
@click.option("--sub", required=True, help="Principal id (the directory's principal).")
@click.option("--tenant", "tenant", required=True, help="The tenant signed in to (tid).")
@click.option("--ttl", default=3600, show_default=True, help="Lifetime in seconds.")
def token(sub: str, tenant: str, ttl: int) -> None:
    """Mint a development HS256 token (needs SUPPORT_ACCESS_JWT_SECRET)."""
    from service.auth import mint_token

    secret = current_app.config["JWT_SECRET"]
    if not secret:
        raise click.ClickException("SUPPORT_ACCESS_JWT_SECRET is not set")
    click.echo(mint_token(secret, sub, tenant, timedelta(seconds=ttl), system_now()))


@click.command("sweep")
def sweep() -> None:
    """Apply due expiries now (decisions never wait for this)."""
    from service.workflow import sweep as run_sweep

    with database.connection_context():
        count = run_sweep(current_app.config["CLOCK"]())
    click.echo(f"{count} requests expired or completed")


def init_app(app: Flask) -> None:
    for command in (directory_cli, policy_cli, audit_cli, token, sweep):
        app.cli.add_command(command)

"""Peer: the Cerbos PDP, the real binary from the npm package @cerbos/cerbos-linux-x64,
with a disk policy store, serving HTTP on 127.0.0.1 only (telemetry off, audit off).

Cerbos keeps no grant data: the caller passes each engineer's granted tenants as a
principal attribute (`grants`) on every request, and the resource policy allows `read`
on `diagnostics` resources whose `tenant` attribute is in that list and whose
`category` is one access.yaml lists. Single check = one resource with one action per
request; a batch of N = N resources in one CheckResources request.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

from bench.dataset import Check, Dataset

NAME = "Cerbos"
PACKAGE = "@cerbos/cerbos-linux-x64"
PACKAGE_VERSION = "0.55.0"
ROLE = "support_engineer"
MAX_RESOURCES = 500  # Cerbos allows at most 500 resources per request (default 50)


def binary_path(work: Path) -> Path:
    return work / "cerbos" / "node_modules" / "@cerbos" / "cerbos-linux-x64" / "cerbos-linux-x64"


def ensure_installed(work: Path, log) -> tuple[Path | None, str | None]:
    """The cerbos binary, installed with npm under bench/.work/cerbos if missing;
    (None, reason) when it cannot be had here."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None, f"{PACKAGE} ships a linux-x64 binary; this is {platform.system()} {platform.machine()}"
    binary = binary_path(work)
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary, None
    npm = shutil.which("npm")
    if npm is None:
        return None, "npm is not installed (needed to fetch the Cerbos binary from the npm registry)"
    prefix = work / "cerbos"
    prefix.mkdir(parents=True, exist_ok=True)
    log(f"installing {PACKAGE}@{PACKAGE_VERSION} with npm into {prefix} ...")
    try:
        done = subprocess.run(
            [
                npm,
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(prefix),
                f"{PACKAGE}@{PACKAGE_VERSION}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        return None, f"npm install {PACKAGE} timed out after 300 s"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return None, f"npm install {PACKAGE} failed: {' / '.join(tail)}"
    if not binary.is_file():
        return None, f"npm installed {PACKAGE} but {binary} is missing"
    binary.chmod(0o755)
    return binary, None


def version(binary: Path) -> str:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.splitlines()[0].strip() if out else "?"


def policy_yaml(categories: list[str]) -> str:
    return f"""apiVersion: api.cerbos.dev/v1
resourcePolicy:
  version: default
  resource: diagnostics
  rules:
    - actions: ["read"]
      effect: EFFECT_ALLOW
      roles: ["{ROLE}"]
      condition:
        match:
          all:
            of:
              - expr: request.resource.attr.tenant in request.principal.attr.grants
              - expr: request.resource.attr.category in {json.dumps(categories)}
"""


def write_config(run_dir: Path, categories: list[str], http_port: int, grpc_port: int) -> Path:
    policies = run_dir / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "diagnostics.yaml").write_text(policy_yaml(categories), encoding="utf-8")
    config = run_dir / "cerbos.yaml"
    config.write_text(
        f"""server:
  httpListenAddr: "127.0.0.1:{http_port}"
  grpcListenAddr: "127.0.0.1:{grpc_port}"
  requestLimits:
    maxResourcesPerRequest: {MAX_RESOURCES}
    maxActionsPerResource: 50
storage:
  driver: disk
  disk:
    directory: "{policies}"
    watchForChanges: false
audit:
  enabled: false
telemetry:
  disabled: true
""",
        encoding="utf-8",
    )
    return config


def start(binary: Path, config: Path, debug_port: int, log_file: Path) -> subprocess.Popen:
    env = dict(os.environ, CERBOS_NO_TELEMETRY="1", DO_NOT_TRACK="1")
    handle = open(log_file, "ab")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [
            str(binary),
            "server",
            f"--config={config}",
            "--log-level=warn",
            f"--debug-listen-addr=127.0.0.1:{debug_port}",
        ],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


HEALTH_PATH = "/_cerbos/health"
CHECK_PATH = "/api/check/resources"


# --- request bodies ----------------------------------------------------------------


def _principal(ds: Dataset, engineer: str) -> dict:
    return {"id": engineer, "roles": [ROLE], "attr": {"grants": ds.granted(engineer)}}


def _resource(c: Check, index: int) -> dict:
    return {
        "actions": [c.action],
        "resource": {
            "kind": "diagnostics",
            "id": f"{index}:{c.tenant_id}/{c.category}",
            "attr": {"tenant": c.tenant_id, "category": c.category},
        },
    }


def body(ds: Dataset, checks: list[Check], request_id: str = "bench") -> dict:
    """One CheckResources request for checks that share a principal."""
    principals = {c.principal for c in checks}
    if len(principals) != 1:
        raise ValueError("a Cerbos CheckResources request has one principal")
    principal = checks[0].principal
    return {
        "requestId": request_id,
        "principal": _principal(ds, principal),
        "resources": [_resource(c, i) for i, c in enumerate(checks)],
    }


def answers(response: dict, checks: list[Check]) -> list[bool]:
    results = response["results"]
    if len(results) != len(checks):
        raise ValueError(f"Cerbos answered {len(results)} results for {len(checks)} resources")
    out = []
    for c, result in zip(checks, results, strict=True):
        out.append(result["actions"].get(c.action) == "EFFECT_ALLOW")
    return out


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> float | None:
    """Seconds from now until GET /_cerbos/health answers 200, None on timeout/exit."""
    from bench.servers import wait_http_ok

    return wait_http_ok(url + HEALTH_PATH, proc, timeout)

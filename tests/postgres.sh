#!/usr/bin/env bash
# The PostgreSQL pass of `make test`: start a throwaway PostgreSQL server on 127.0.0.1,
# run the whole pytest suite against it (each test on a database of its own, see
# tests/postgres.py), then remove the server.
#
# Usage: tests/postgres.sh PYTHON [pytest arguments...]
# Without PostgreSQL's server programs: as root (CI), Debian's `postgresql` package is
# installed; otherwise the pass is skipped with a message (and fails when CI=true).
set -euo pipefail
python=$1
shift

server_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

bin=$(server_bin)
if [ -z "$bin" ] && [ "$(id -u)" = 0 ]; then
    echo "PostgreSQL pass: installing Debian's postgresql package"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    bin=$(server_bin)
fi
if [ -z "$bin" ]; then
    echo "PostgreSQL pass skipped: no PostgreSQL server here (Debian package postgresql; as root it is installed)" >&2
    [ "${CI:-}" = true ] && exit 1
    exit 0
fi

# PostgreSQL refuses to run as root: then the server runs as the postgres user.
as_owner=()
[ "$(id -u)" = 0 ] && as_owner=(runuser -u postgres --)
work=$(mktemp -d /tmp/support-access-pg.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres "$work"
port=$("$python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
stop() {
    "${as_owner[@]}" "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap stop EXIT
"${as_owner[@]}" "$bin/initdb" -D "$work/data" -A trust -U postgres >"$work/initdb.log"
# A test server: nothing in it outlives the run, so it need not survive a crash.
options="-c listen_addresses=127.0.0.1 -p $port -k $work -c fsync=off -c synchronous_commit=off"
"${as_owner[@]}" "$bin/pg_ctl" -D "$work/data" -o "$options -c full_page_writes=off" -l "$work/server.log" -w start >/dev/null
echo "PostgreSQL pass: $("$bin/postgres" --version) on 127.0.0.1:$port"
SUPPORT_ACCESS_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$port/postgres" "$python" -m pytest "$@"

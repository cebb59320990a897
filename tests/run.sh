#!/usr/bin/env bash
# Run the whole tornchat test suite on a fresh machine with one command:
#
#     bash tests/run.sh [extra pytest arguments]
#
# It creates .venv (if missing), installs tornchat with its test, load-test and
# deployment-test tools (and Chromium for the browser tests, with apt-get when
# run as root), makes sure the local PostgreSQL and Redis are up
# (starting them when they are installed but stopped), then runs pytest.
# The Kafka-protocol broker (Tansu) is started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,loadtest]'
if [ -f tests/deploy/requirements.txt ]; then
    .venv/bin/python -m pip install --quiet -r tests/deploy/requirements.txt
fi

# The Ansible deployment test builds a virtualenv with the system Python.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! /usr/bin/python3 -m venv --help >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-venv
fi

# The demo page's browser tests drive Debian's Chromium through Playwright
# (Playwright's own browser download is not used).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# the lifecycle test reads the listening socket's queue with ss (iproute2)
if ! command -v ss >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 6379 && command -v redis-server >/dev/null; then
    echo "starting redis-server on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
if ! port_open 5432 && command -v pg_ctlcluster >/dev/null; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi

.venv/bin/ruff check tornchat tests loadtest harness
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"

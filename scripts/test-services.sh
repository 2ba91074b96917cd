# Source this (". scripts/test-services.sh") before the tests: it installs, where missing, and
# starts what the tests talk to, from Debian's packages (run as root, as on CI):
#   * a PostgreSQL server on loopback for the store's PostgreSQL backend
#     (exports PROMPTREC_TEST_POSTGRES_URL, read by tests/conftest.py);
#   * headless Chromium for the web page's browser test (exports PROMPTREC_CHROMIUM).
# It is idempotent: a second run finds everything in place and only starts what is stopped.

# PostgreSQL for the store's tests (tests/conftest.py: postgres_url): Debian's server on loopback
missing=()
if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
    missing+=(postgresql)
fi
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
export PROMPTREC_CHROMIUM="${PROMPTREC_CHROMIUM:-$(command -v chromium)}"
pg_version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main" {found = 1} END {exit !found}'; then
    pg_createcluster "$pg_version" main
fi
if ! pg_ctlcluster "$pg_version" main status >/dev/null 2>&1; then
    pg_ctlcluster "$pg_version" main start
fi
pg_port=$(pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main" {print $3}')
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p "$pg_port" && break; sleep 1; done
pg_isready -h 127.0.0.1 -p "$pg_port"
(cd / && runuser -u postgres -- psql -p "$pg_port" -v ON_ERROR_STOP=1 -q) <<'SQL'
SELECT 'CREATE ROLE promptrec' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'promptrec')\gexec
ALTER ROLE promptrec WITH LOGIN PASSWORD 'promptrec';
SELECT 'CREATE DATABASE promptrec_test OWNER promptrec'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'promptrec_test')\gexec
SQL
export PROMPTREC_TEST_POSTGRES_URL="postgresql://promptrec:promptrec@127.0.0.1:${pg_port}/promptrec_test"
psql "$PROMPTREC_TEST_POSTGRES_URL" -v ON_ERROR_STOP=1 -qAtc "SELECT 'PostgreSQL ready: ' || version()"

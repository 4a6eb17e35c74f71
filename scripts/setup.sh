#!/usr/bin/env bash
# Installs what parley needs and is missing, from Debian/Ubuntu packages.
# Fast and silent when everything is there.
#
#   scripts/setup.sh run    what building and running needs: a C compiler,
#                           make, pkg-config and the -dev libraries, libpq and
#                           hiredis for cluster mode included
#                           (`make run`, `make bench`, `make fuzz`, `make install`)
#   scripts/setup.sh test   that, and what the tests need: Python with pytest,
#                           websockets, requests, psycopg2 and redis, openssl,
#                           mdb_copy, Node, npm, Chromium and the npm packages,
#                           and the engines the cluster tests start: redis-server
#                           and PostgreSQL's server (`make test`)
#
# PARLEY_PG_LIB (default /usr/lib/postgresql) is where PostgreSQL's server
# binaries are looked for (VERSION/bin/initdb); the tests of this script set it.
set -euo pipefail

mode=${1:-test}
case "$mode" in
  run|test) ;;
  *) echo "usage: scripts/setup.sh run|test" >&2; exit 2 ;;
esac

# pkg-config module -> Debian package
declare -A PKG=(
  [libuv]=libuv1-dev
  [libcrypto]=libssl-dev
  [libssl]=libssl-dev
  [lmdb]=liblmdb-dev
  [libsodium]=libsodium-dev
  [libedit]=libedit-dev
  [libpq]=libpq-dev
  [hiredis]=libhiredis-dev
)
# command -> Debian package
declare -A CMD=(
  [cc]=gcc
  [make]=make
  [pkg-config]=pkg-config
)
# Python module (for /usr/bin/python3) -> Debian package
declare -A PYMOD=()
if [ "$mode" = test ]; then
  CMD+=([node]=nodejs [npm]=npm [chromium]=chromium [openssl]=openssl [mdb_copy]=lmdb-utils
        [redis-server]=redis-server [redis-cli]=redis-tools [psql]=postgresql-client)
  PYMOD=([pytest]=python3-pytest [websockets]=python3-websockets [requests]=python3-requests
         [psycopg2]=python3-psycopg2 [redis]=python3-redis)
fi

missing=()
for c in "${!CMD[@]}"; do command -v "$c" >/dev/null 2>&1 || missing+=("${CMD[$c]}"); done
for m in "${!PKG[@]}"; do
  command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$m" 2>/dev/null || missing+=("${PKG[$m]}")
done
if [ "$mode" = test ]; then
  [ -x /usr/bin/python3 ] || missing+=(python3)
  for m in "${!PYMOD[@]}"; do
    /usr/bin/python3 -c "import $m" >/dev/null 2>&1 || missing+=("${PYMOD[$m]}")
  done
  # PostgreSQL's server binaries are not on PATH: Debian keeps them per version.
  pg_initdb=( "${PARLEY_PG_LIB:-/usr/lib/postgresql}"/*/bin/initdb )
  [ -x "${pg_initdb[0]}" ] || missing+=(postgresql)
fi

# npm packages (browser tests only): playwright-core drives Debian's Chromium.
npm_missing() { [ "$mode" = test ] && [ ! -d node_modules/playwright-core ]; }
npm_install() {
  echo "setup: npm install (playwright-core)" >&2
  npm install --no-audit --no-fund --silent >/dev/null 2>&1 || {
    echo "setup: npm install failed" >&2; exit 1; }
}

if [ ${#missing[@]} -eq 0 ]; then
  if npm_missing; then npm_install; fi
  exit 0
fi

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "setup: installing ${missing[*]}" >&2
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "setup: need root to install: ${missing[*]}" >&2
    echo "setup: run: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: no apt-get here; install these packages (Debian names): ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    echo "setup: could not install: ${missing[*]}" >&2
    exit 1
  fi
fi
if npm_missing; then npm_install; fi

#!/usr/bin/env bash
# Installs what parley needs and is missing, from Debian/Ubuntu packages.
# Fast and silent when everything is there. Called by `make run` / `make test`.
set -euo pipefail

# pkg-config module -> Debian package
declare -A PKG=(
  [libuv]=libuv1-dev
  [libcrypto]=libssl-dev
  [libssl]=libssl-dev
  [lmdb]=liblmdb-dev
  [libsodium]=libsodium-dev
  [libedit]=libedit-dev
)
# Python module (for /usr/bin/python3) -> Debian package
declare -A PYMOD=(
  [pytest]=python3-pytest
  [websockets]=python3-websockets
  [requests]=python3-requests
)
# command -> Debian package
declare -A CMD=(
  [cc]=gcc
  [make]=make
  [pkg-config]=pkg-config
  [node]=nodejs
  [npm]=npm
  [chromium]=chromium
  [openssl]=openssl
)

missing=()
for c in "${!CMD[@]}"; do command -v "$c" >/dev/null 2>&1 || missing+=("${CMD[$c]}"); done
for m in "${!PKG[@]}"; do
  command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$m" 2>/dev/null || missing+=("${PKG[$m]}")
done
[ -x /usr/bin/python3 ] || missing+=(python3)
for m in "${!PYMOD[@]}"; do
  /usr/bin/python3 -c "import $m" >/dev/null 2>&1 || missing+=("${PYMOD[$m]}")
done

# npm packages (browser tests): playwright-core drives Debian's Chromium.
npm_missing() { [ ! -d node_modules/playwright-core ]; }

if [ ${#missing[@]} -eq 0 ]; then
  if npm_missing; then
    echo "setup: npm install (playwright-core)" >&2
    npm install --no-audit --no-fund --silent >/dev/null 2>&1 || {
      echo "setup: npm install failed" >&2; exit 1; }
  fi
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
if npm_missing; then
  npm install --no-audit --no-fund --silent >/dev/null 2>&1 || {
    echo "setup: npm install failed" >&2; exit 1; }
fi

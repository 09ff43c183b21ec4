#!/usr/bin/env bash
# Installs what the console's browser test (crates/api/tests/browser/console.mjs) needs on a
# fresh machine: Debian's chromium, Node.js with npm, and playwright-core (pinned in that
# folder's package-lock.json). Idempotent: skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

# The browser: Debian's chromium (playwright-core drives it; it downloads no browser itself).
if ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium
fi

# Node.js and npm (Debian's packages, unless a node with npm is already there).
if ! command -v node >/dev/null 2>&1; then
  apt_install nodejs
fi
if ! command -v npm >/dev/null 2>&1; then
  apt_install npm
fi

# playwright-core, exactly as pinned by the lock file.
cd crates/api/tests/browser
want="$(node -p "require('./package.json').dependencies['playwright-core']")"
have="$(node -p "require('./node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  npm ci --no-audit --no-fund
fi

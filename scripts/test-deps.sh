#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: the test runner, a real Alertmanager,
# the OCSF schema library. Idempotent: skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# The test runner.
if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

# A real Prometheus Alertmanager for the Alertmanager sink's test (Debian's package; the
# test starts its own instance on loopback).
if ! command -v prometheus-alertmanager >/dev/null 2>&1 && ! command -v alertmanager >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus-alertmanager
fi

# openssl makes the TLS tests' certificates.
if ! command -v openssl >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends openssl
fi

# py-ocsf-models: the independent OCSF schema check of the OCSF output.
if ! python3 -c "import py_ocsf_models.events.findings.detection_finding" >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check "py-ocsf-models==0.10.0"
fi

# schemathesis: the independent check of the query API against its OpenAPI document.
if ! command -v schemathesis >/dev/null 2>&1 || [ "$(schemathesis --version 2>/dev/null | awk '{print $NF}')" != "4.32.5" ]; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi

# The console's browser test: Debian's chromium, Node.js and playwright-core.
scripts/browser-deps.sh

# kubernetes-validate: the independent check of the Kubernetes manifests (deploy/kubernetes).
if ! python3 -c "import kubernetes_validate" >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0"
fi

# psql: the replica tests cut PostgreSQL's connections and read the shared state with it.
if ! command -v psql >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql-client
fi

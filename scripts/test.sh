#!/usr/bin/env bash
# Sets up and runs every test: the Rust tests, then the API and browser tests
# (end2end/) against the real sluice binary in Debian's Chromium. Installs
# what is missing (Chromium, npm packages, the wasm toolchain) on the way.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"

apt_install() {
  [ -n "${SLUICE_APT_UPDATED:-}" ] || { apt-get update -qq; SLUICE_APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v chromium >/dev/null || { echo "test.sh: installing Debian's chromium" >&2; apt_install chromium; }
command -v npm >/dev/null || { echo "test.sh: installing node and npm" >&2; apt_install nodejs npm; }
# The TLS tests make their certificates with the openssl command.
command -v openssl >/dev/null || { echo "test.sh: installing openssl" >&2; apt_install openssl; }

# A real Kafka-protocol broker for the engine tests: tansu, built once from
# crates.io and cached outside the clone (about 10 minutes the first time).
tools="$HOME/.cache/sluice-tools"
if [ ! -x "$tools/bin/tansu" ]; then
  echo "test.sh: installing tansu 0.6.0 (the test broker) into $tools" >&2
  CARGO_TARGET_DIR="$tools/target" cargo install tansu --version 0.6.0 --locked \
    --features dynostore,libsql --root "$tools" --quiet
  rm -rf "$tools/target"
fi
export TANSU_BIN="$tools/bin/tansu" SLUICE_REQUIRE_TANSU=1

# An AWS emulator for the Lambda tests: moto_server, from PyPI.
if ! command -v moto_server >/dev/null; then
  echo "test.sh: installing moto (AWS emulator) from PyPI" >&2
  python3 -m pip install --quiet 'moto[server]'
fi
export SLUICE_REQUIRE_MOTO=1

# The real AWS clients for the AWS API tests (end2end/aws): the AWS CLI and boto3.
if ! command -v aws >/dev/null || ! python3 -c 'import boto3' 2>/dev/null; then
  echo "test.sh: installing the AWS CLI and boto3 from PyPI" >&2
  python3 -m pip install --quiet awscli boto3
fi

# Powertools for AWS Lambda: the schema registry tests' function decodes
# every event with its kafka_consumer (Avro and Protobuf extras).
if ! python3 -c 'import aws_lambda_powertools.utilities.kafka, avro, google.protobuf' 2>/dev/null; then
  echo "test.sh: installing Powertools for AWS Lambda (kafka consumer) from PyPI" >&2
  python3 -m pip install --quiet 'aws-lambda-powertools[kafka-consumer-avro,kafka-consumer-protobuf]'
fi

# Style first: the tree is formatted (rustfmt.toml) and lint-free.
echo "test.sh: cargo fmt --check and cargo clippy" >&2
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

bin=$(scripts/build.sh | tail -n 1)

echo "test.sh: cargo tests" >&2
cargo test --workspace --quiet

# The same on PostgreSQL (running on 127.0.0.1:5432 on these machines): each
# test's Sluice gets a fresh database, dropped afterwards.
pg="${SLUICE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
command -v psql >/dev/null || apt_install postgresql-client
echo "test.sh: cargo tests on PostgreSQL" >&2
# Every suite that stores anything; `cluster` runs only here (several nodes
# need PostgreSQL).
SLUICE_TEST_POSTGRES="$pg" cargo test -p sluice-server --quiet --tests
for db in $(psql "$pg/postgres" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'sluice_t_%'"); do
  psql "$pg/postgres" -qc "DROP DATABASE $db" || true
done

echo "test.sh: API and browser tests (end2end/)" >&2
cd end2end
npm ci --no-audit --no-fund --silent
SLUICE_BIN="$bin" CHROMIUM="$(command -v chromium)" node --test --test-concurrency=1 tests/

# Every browser and API suite again on PostgreSQL: same migrations, same behaviour.
echo "test.sh: API and browser tests on PostgreSQL" >&2
SLUICE_E2E_POSTGRES="${SLUICE_E2E_POSTGRES:-$pg}" \
  SLUICE_BIN="$bin" CHROMIUM="$(command -v chromium)" node --test --test-concurrency=1 tests/

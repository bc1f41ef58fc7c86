#!/usr/bin/env bash
# Builds Sluice: the console's wasm module (hydrate) and the server binary
# (ssr), in two cargo invocations so their features never unify. Installs the
# wasm target and the wasm-bindgen CLI that matches Cargo.lock when missing.
# Prints the path of the built binary last.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
profile="${SLUICE_PROFILE:-debug}"
release_flag=()
[ "$profile" = release ] && release_flag=(--release)

command -v cargo >/dev/null || { echo "build.sh: cargo is missing; install Rust (rustup) first" >&2; exit 1; }
if ! command -v make >/dev/null || ! command -v cc >/dev/null || ! command -v pkg-config >/dev/null || ! pkg-config --exists openssl; then
  echo "build.sh: installing make, a C compiler and OpenSSL's headers (librdkafka is built from source, with TLS and SASL/SCRAM)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential pkg-config libssl-dev >/dev/null
fi
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
want=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "build.sh: installing wasm-bindgen-cli $want (matches Cargo.lock)" >&2
  # Not --locked: its lock names a crate version the registry here lacks.
  cargo install wasm-bindgen-cli --version "$want"
fi

# The wasm is always optimised for size (profile wasm-release: about 0.7 MB
# gzipped instead of 1.9 MB); SLUICE_WASM_PROFILE=dev builds it faster.
wasm_profile="${SLUICE_WASM_PROFILE:-wasm-release}"
wasm_dir="$wasm_profile"
[ "$wasm_profile" = dev ] && wasm_dir=debug
echo "build.sh: building the console (wasm, $wasm_profile)" >&2
cargo rustc -p sluice-app --lib --target wasm32-unknown-unknown --features hydrate \
  --crate-type cdylib --profile "$wasm_profile" --quiet
site="$CARGO_TARGET_DIR/$profile/site"
mkdir -p "$site/pkg"
wasm-bindgen --target web --no-typescript --out-dir "$site/pkg" --out-name sluice \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/$wasm_dir/sluice_app.wasm"
cp style/main.css "$site/pkg/sluice.css"

echo "build.sh: building the server" >&2
cargo build -p sluice-server --bin sluice "${release_flag[@]}" --quiet
echo "$CARGO_TARGET_DIR/$profile/sluice"

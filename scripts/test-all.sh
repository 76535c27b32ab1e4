#!/usr/bin/env bash
# Runs every test of the repository: Rust (all crates, lint gates), Python, Node, PostgreSQL.
# This is the README's test command and what CI runs (.ci/run). It installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

# No incremental compilation caches: they are only worth their disk (over 1 GB for this
# workspace's test targets) when the same crates are rebuilt again and again, which a CI run
# does not do. Export CARGO_INCREMENTAL=1 to keep them locally.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Each step states the disk left: a build that runs out of disk fails in whichever tool is
# writing at the time, and this says so at once.
step() { printf '\n==> %s   [%s free]\n' "$*" "$(df -Ph . | awk 'NR==2 {print $4}')"; }
start=$(date +%s)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p cycles-core --features pg-tests --all-targets -- -D warnings

step "cargo doc (cycles-core with postgres, -D warnings: broken or private links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc -p cycles-core --no-deps --features postgres

step "cargo test --workspace"
cargo test --workspace
# The workspace build has PostgreSQL support (the CLI and the bindings enable it): this one
# checks that a build without it refuses a postgres:// location rather than open a file.
cargo test -p cycles-core --lib ledger::location

step "Python binding (scripts/test-python.sh)"
scripts/test-python.sh

step "Node binding (scripts/test-node.sh)"
scripts/test-node.sh

step "PostgreSQL ledger (scripts/pg-test.sh)"
scripts/pg-test.sh

step "incident replay"
cargo run -q -p cycles-core --example incident_replay >/dev/null

printf '\nAll tests passed in %ss (build output: %s; %s free).\n' "$(( $(date +%s) - start ))" \
    "$(du -sh target | cut -f1)" "$(df -Ph . | awk 'NR==2 {print $4}')"

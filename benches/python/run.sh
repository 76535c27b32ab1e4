#!/usr/bin/env bash
# Python binding benchmark: build the release wheel, install it into its own venv (the dev
# .venv keeps its debug build), optionally run the Rust criterion bench for the reference
# figures right before, then run bench.py and write its section of docs/benchmarks.md.
#
#   benches/python/run.sh            # Python figures; Rust figures from the last cargo bench
#   benches/python/run.sh --rust     # measure the Rust bench first (same machine, same minute)
set -euo pipefail
cd "$(dirname "$0")/../.."

rust=0
if [ "${1:-}" = "--rust" ]; then
    rust=1
    shift
fi

[ -x .venv/bin/maturin ] || scripts/test-python.sh --co -q >/dev/null  # installs the tools
.venv/bin/maturin build --release --quiet -m cycles-py/Cargo.toml --target-dir target/maturin \
    -o target/maturin/wheels
VENV=target/bench-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
wheel="$(ls -t target/maturin/wheels/cycles-*.whl | head -1)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall "$wheel"

if [ "$rust" = 1 ]; then
    cargo bench -p cycles-core --bench authority
fi
"$VENV/bin/python" benches/python/bench.py --write docs/benchmarks.md "$@"

#!/usr/bin/env bash
# Builds the Python binding into the root .venv and runs its checks: stubtest, pytest.
#
#   scripts/test-python.sh [pytest args...]
#   scripts/test-python.sh --build-only     (venv and extension only; scripts/pg-test.sh uses it)
#
# A fresh machine needs only python3 (>= 3.9, with venv) and the Rust toolchain: the script
# creates .venv, installs the pinned tools from cycles-py/requirements-dev.txt (skipped when
# they are already installed), builds the extension with `maturin develop` into its own target
# dir (so it does not fight `cargo test` over pyo3's build config) and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_ONLY=
if [ "${1:-}" = --build-only ]; then
    BUILD_ONLY=1
    shift
fi

PY="${PYTHON:-python3}"
VENV=.venv
REQS=cycles-py/requirements-dev.txt
STAMP="$VENV/.cycles-py-requirements"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    echo "$want" > "$STAMP"
fi

# maturin needs the venv active (VIRTUAL_ENV) to install into it.
export VIRTUAL_ENV="$PWD/$VENV"
export PATH="$VIRTUAL_ENV/bin:$PATH"
maturin develop --quiet -m cycles-py/Cargo.toml --target-dir target/maturin
[ -z "$BUILD_ONLY" ] || exit 0

python -m mypy.stubtest cycles._cycles
python -m pytest cycles-py/tests -q "$@"

#!/bin/sh
# Makes, once, a virtualenv holding the Python client `transmission-rpc` 7.x from PyPI, and prints
# the path of its python on stdout (everything else goes to stderr).
#
# The venv lives under the workspace's target/ (or $CARGO_TARGET_DIR), so it is made once and
# removed by `cargo clean`. Installing needs PyPI: run this before the tests when they run in a
# network namespace without it (scripts/test does so).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/rpc-interop-venv"
mkdir -p "$target"
# Tests run in parallel: one of them makes the venv, the others wait for it.
exec 9>"$venv.lock"
flock 9
if ! "$venv/bin/python" -c 'import transmission_rpc' >/dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'transmission-rpc==7.*' >&2
fi
echo "$venv/bin/python"

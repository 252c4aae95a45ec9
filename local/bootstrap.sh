#!/usr/bin/env bash
# Creates (or refreshes) the project's Python virtualenv in .venv: moto server for the local stack, the
# stock SDKs and pytest for the end-to-end tests. Re-installs only when the requirements change.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp="$venv/.requirements.sha256"
want=$(cat tests/requirements.txt | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  echo "$want" > "$stamp"
fi

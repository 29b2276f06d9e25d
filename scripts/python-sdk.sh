#!/usr/bin/env bash
# Installs Microsoft's Python Service Bus SDK (azure-servicebus, from PyPI) into a private virtual
# environment, once, and prints the path of that environment's python on stdout. The referee tests
# of servicebus-peer run it (servicebus-peer/tests/python_referee.rs). Idempotent: a second run
# with the same pinned version only prints the path.
#
# SERVICEBUS_SDK_DIR overrides the cache folder; PYTHON the interpreter the venv is made from.
set -euo pipefail

version="7.15.0"
python="${PYTHON:-python3}"
dir="${SERVICEBUS_SDK_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/order-process/azure-servicebus-$version}"
stamp="$dir/.installed"

if [[ ! -f "$stamp" ]]; then
  rm -rf "$dir"
  "$python" -m venv "$dir" >&2
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "azure-servicebus==$version" >&2
  "$dir/bin/python" -c 'import azure.servicebus' >&2
  touch "$stamp"
fi
echo "$dir/bin/python"

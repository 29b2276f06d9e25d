#!/usr/bin/env bash
# Checks the Prometheus alert rules of docs/observability.md (the yaml block under "### Alerts"):
#   1. `promtool check rules`: the rules parse, their PromQL and templates are valid;
#   2. `promtool test rules scripts/alerts-test.yaml`: alerts fire, and stay quiet, on series
#      written by hand (pauses, conflicts, skipped status writes).
#
#   scripts/check-alerts.sh
#
# promtool is taken from PATH, else from Debian's `prometheus` package, downloaded with
# `apt-get download` and unpacked into ${XDG_CACHE_HOME:-$HOME/.cache}/order-process-tools (nothing
# is installed or started). When neither works the script prints SKIP and exits 0; a failed check
# is a FAIL and exits 1.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/order-process-tools"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

PROMTOOL=$(command -v promtool || true)
if [ -z "$PROMTOOL" ]; then
  PROMTOOL=$(ls "$CACHE"/prometheus-*/usr/bin/promtool 2>/dev/null | tail -n 1)
fi
if [ -z "$PROMTOOL" ] && command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
  echo "fetching promtool (Debian package prometheus) into $CACHE"
  if (cd "$WORK" && apt-get download prometheus >/dev/null 2>&1); then
    deb=$(ls "$WORK"/prometheus_*.deb)
    version=$(dpkg-deb -f "$deb" Version)
    mkdir -p "$CACHE/prometheus-$version"
    dpkg-deb -x "$deb" "$CACHE/prometheus-$version" && PROMTOOL="$CACHE/prometheus-$version/usr/bin/promtool"
    rm -f "$deb"
  fi
fi
if [ -z "$PROMTOOL" ] || [ ! -x "$PROMTOOL" ]; then
  echo "SKIP  alert rules not checked: no promtool (not on PATH, and apt-get download prometheus failed)"
  exit 0
fi
echo "promtool: $("$PROMTOOL" --version 2>&1 | head -n 1)"

# The rules as the document gives them: the first yaml block after the "### Alerts" heading.
python3 - docs/observability.md "$WORK/rules.yaml" <<'PY' || exit 1
import re, sys
text = open(sys.argv[1]).read()
start = text.find("\n### Alerts\n")
match = re.search(r"```yaml\n(.*?)```", text[start:], re.S) if start >= 0 else None
if not match:
    sys.exit(f"FAIL  {sys.argv[1]}: no yaml block under '### Alerts'")
open(sys.argv[2], "w").write(match.group(1))
PY
cp scripts/alerts-test.yaml "$WORK/alerts-test.yaml"

failed=0
if out=$("$PROMTOOL" check rules "$WORK/rules.yaml" 2>&1); then
  echo "PASS  promtool check rules: $(printf '%s\n' "$out" | grep -o '[0-9]* rules found')"
else
  printf '%s\n' "$out" | sed 's/^/      | /'
  echo "FAIL  promtool check rules"
  failed=1
fi
if out=$(cd "$WORK" && "$PROMTOOL" test rules alerts-test.yaml 2>&1); then
  echo "PASS  promtool test rules scripts/alerts-test.yaml"
else
  printf '%s\n' "$out" | sed 's/^/      | /'
  echo "FAIL  promtool test rules scripts/alerts-test.yaml"
  failed=1
fi
exit $failed

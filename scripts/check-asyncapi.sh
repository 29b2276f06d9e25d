#!/usr/bin/env bash
# Validates the AsyncAPI document of the message contracts:
#   1. the AsyncAPI 3 parser (@asyncapi/parser, the library behind `asyncapi validate`): the
#      document against the AsyncAPI 3.0.0 schema, the AMQP binding schemas and the parser's
#      rules (references resolve, operations use their channel's messages, ...);
#   2. every message example against its message's payload and headers schemas (JSON Schema
#      draft-07 with formats, via ajv), which the parser does not do for AsyncAPI 3;
#   3. each channel's AMQP queue binding names the channel's address.
#
#   scripts/check-asyncapi.sh [file]      (default: docs/asyncapi.yaml)
#
# The validator is installed on first use into ${XDG_CACHE_HOME:-$HOME/.cache}/order-process-tools
# (npm, pinned versions) and reused afterwards without calling npm. When it cannot be installed
# (no node/npm, registry unreachable) the script prints SKIP and exits 0; any validation error is
# a FAIL and exits 1. Warnings of the parser are printed but do not fail.
set -uo pipefail
# A file given on the command line is relative to the caller's directory.
if [ $# -gt 0 ]; then
  FILE=$1
  [ -f "$FILE" ] || { echo "FAIL  $FILE: no such file"; exit 1; }
  ABS="$(cd "$(dirname "$FILE")" && pwd)/$(basename "$FILE")"
fi
cd "$(dirname "$0")/.." || exit 1
if [ $# -eq 0 ]; then
  FILE=docs/asyncapi.yaml
  ABS="$PWD/$FILE"
fi
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/order-process-tools"
# Pinned versions: bump them here; a new set installs beside the old one.
NPM_PACKAGES=(@asyncapi/parser@3.6.6 ajv@8.20.0 ajv-formats@2.1.1)
TOOLS="$CACHE/asyncapi-$(printf '%s_' "${NPM_PACKAGES[@]}" | tr '/@' '__')"
STAMP="$TOOLS/.installed"

[ -f "$ABS" ] || { echo "FAIL  $FILE: no such file"; exit 1; }

if ! command -v node >/dev/null; then
  echo "SKIP  $FILE not validated: node is needed to run @asyncapi/parser"
  exit 0
fi
if [ ! -e "$STAMP" ]; then
  if ! command -v npm >/dev/null; then
    echo "SKIP  $FILE not validated: npm is needed to install @asyncapi/parser"
    exit 0
  fi
  echo "installing ${NPM_PACKAGES[*]} into $TOOLS"
  mkdir -p "$TOOLS"
  [ -e "$TOOLS/package.json" ] || echo '{"private": true}' >"$TOOLS/package.json"
  log=$(mktemp)
  if npm install --silent --no-audit --no-fund --fetch-retries=1 --prefix "$TOOLS" "${NPM_PACKAGES[@]}" >"$log" 2>&1; then
    touch "$STAMP"
    rm -f "$log"
  else
    tail -n 3 "$log" | sed 's/^/      | /'
    rm -f "$log"
    echo "SKIP  $FILE not validated: @asyncapi/parser could not be installed (npm registry unreachable?)"
    exit 0
  fi
fi

# Written on every run (cheap), so a change here takes effect without reinstalling.
cat >"$TOOLS/check-asyncapi.cjs" <<'JS'
const fs = require("node:fs");
const path = require("node:path");
const { Parser, fromFile, DiagnosticSeverity } = require("@asyncapi/parser");
const Ajv = require("ajv");
const addFormats = require("ajv-formats");

const file = path.resolve(process.argv[2]);
const shownName = process.argv[3] || file;
const severityName = { 0: "error", 1: "warning", 2: "info", 3: "hint" };
let errors = 0;
const fail = (text) => { console.log(`FAIL  ${text}`); errors++; };
const pass = (text) => console.log(`PASS  ${text}`);

(async () => {
  const { document, diagnostics } = await fromFile(new Parser(), file).parse();
  const shown = diagnostics.filter((d) => d.severity <= DiagnosticSeverity.Warning);
  for (const d of shown) {
    const where = d.range ? `${shownName}:${d.range.start.line + 1}` : shownName;
    const at = d.path && d.path.length ? ` (at ${d.path.join(".")})` : "";
    console.log(`      ${severityName[d.severity]}: ${where}: ${d.message}${at} [${d.code}]`);
  }
  const parseErrors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).length;
  const warnings = shown.length - parseErrors;
  if (!document || parseErrors) {
    fail(`AsyncAPI parser: ${parseErrors} error(s), ${warnings} warning(s)`);
    if (!document) process.exit(1);
  } else {
    pass(`AsyncAPI ${document.version()} document valid (${warnings} warning(s))`);
  }

  // Examples against their schemas. multipleOfPrecision: `multipleOf: 0.0001` on a binary float
  // (19.99 / 0.0001 = 199899.99999999997) needs a tolerance; strict off for the parser's own
  // x-parser-* keywords.
  const ajv = new Ajv({ strict: false, allErrors: true, multipleOfPrecision: 9 });
  addFormats(ajv);
  let checked = 0;
  for (const message of document.allMessages().all()) {
    const schemas = { payload: message.payload()?.json(), headers: message.headers()?.json() };
    const validators = {};
    for (const [part, schema] of Object.entries(schemas)) {
      if (schema === undefined) continue;
      try {
        validators[part] = ajv.compile(schema);
      } catch (e) {
        fail(`message ${message.id()}: ${part} schema does not compile: ${e.message}`);
      }
    }
    for (const [i, example] of message.examples().all().entries()) {
      const label = `message ${message.id()} example ${example.name() || i}`;
      for (const [part, value] of [["payload", example.payload()], ["headers", example.headers()]]) {
        if (value === undefined) continue;
        const validate = validators[part];
        if (!validate) {
          fail(`${label}: has ${part} but the message defines no ${part} schema`);
        } else if (!validate(value)) {
          fail(`${label}: ${part} does not match its schema: ` +
            validate.errors.map((e) => `${e.instancePath || "/"} ${e.message}`).join("; "));
        }
      }
      checked++;
    }
  }
  if (checked === 0) fail("no message examples found");
  else if (errors === 0) pass(`${checked} message examples match their payload and headers schemas`);

  // AMQP queue bindings name the channel's own queue.
  for (const channel of document.channels().all()) {
    const amqp = channel.bindings().get("amqp")?.value();
    if (amqp?.is === "queue" && amqp.queue?.name !== channel.address()) {
      fail(`channel ${channel.id()}: amqp queue name ${amqp.queue?.name} differs from its address ${channel.address()}`);
    }
  }
  if (errors === 0) pass("AMQP queue bindings name their channels' addresses");
  process.exit(errors ? 1 : 0);
})().catch((e) => {
  console.log(`FAIL  ${e.stack || e}`);
  process.exit(1);
});
JS

echo "== $FILE"
if (cd "$TOOLS" && node check-asyncapi.cjs "$ABS" "$FILE"); then
  echo "AsyncAPI document OK"
else
  echo "AsyncAPI document has errors"
  exit 1
fi

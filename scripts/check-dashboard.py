#!/usr/bin/env python3
"""Checks the Grafana dashboard against the metrics the service defines.

    scripts/check-dashboard.py [--scrape FILE] [--dashboard FILE]

- Reads every instrument of actors/src/metrics.rs (its OpenTelemetry name, kind and unit) and
  derives the names the Prometheus exporter serves: dots become underscores, a unit adds its
  suffix (`s` -> `_seconds`), counters get `_total`, histograms `_bucket`, `_sum`, `_count`,
  UpDownCounters and gauges nothing.
- Finds every PromQL expression of docs/grafana-dashboard.json (panel targets, annotations, and
  the `label_values(...)` queries of the template variables) and fails if one uses a metric name
  that is not among those, or a label the service never sets (besides the scrape's own `job`,
  `instance`, `pod`, `namespace` and the histograms' `le`).
- Fails if helm/order-process/files/grafana-dashboard.json (what the chart ships) is not an
  identical copy, if a panel's data source is not the `${datasource}` variable, or if two panels
  share an id.
- With --scrape FILE (the text of a /metrics scrape), also checks that every `order_process_*`
  family in it is a name derived here, with the same type: the naming rules above are right.

Standard library only. Exits 0 when everything holds, 1 otherwise, printing one line per problem.
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS_RS = ROOT / "actors/src/metrics.rs"
DASHBOARD = ROOT / "docs/grafana-dashboard.json"
HELM_COPY = ROOT / "helm/order-process/files/grafana-dashboard.json"

# Labels that Prometheus (or the histogram encoding) adds, not the service.
SCRAPE_LABELS = {"job", "instance", "pod", "namespace", "le"}

# The unit suffixes of opentelemetry-prometheus (utils::get_prom_units); units it does not know
# add nothing.
UNIT_SUFFIXES = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds",
    "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
    "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes",
    "TBy": "terabytes", "B": "bytes", "KB": "kilobytes", "MB": "megabytes", "GB": "gigabytes",
    "TB": "terabytes", "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts",
    "g": "grams", "Cel": "celsius", "Hz": "hertz", "1": "ratio", "%": "percent",
}
PER_UNIT = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}

# PromQL words that are not metric names.
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
    "unless", "atan2", "inf", "nan", "start", "end",
}


def unit_suffix(unit):
    if not unit:
        return None
    if unit in UNIT_SUFFIXES:
        return UNIT_SUFFIXES[unit]
    if "/" in unit:
        first, second = unit.split("/", 1)
        if second not in PER_UNIT:
            return None
        if first in ("1", "d", "h", "min", "s", "ms", "us", "ns") or first not in UNIT_SUFFIXES:
            return f"per_{PER_UNIT[second]}"
        return f"{UNIT_SUFFIXES[first]}_per_{PER_UNIT[second]}"
    return None


def kind_of(builder):
    """The Prometheus type of an OpenTelemetry instrument builder method (`u64_counter`, ...)."""
    if "up_down_counter" in builder or builder.endswith("gauge"):
        return "gauge"
    if builder.endswith("counter"):
        return "counter"
    if builder.endswith("histogram"):
        return "histogram"
    return None


def read_instruments(source):
    """{otel name: (prometheus type, unit)} from metrics.rs, and a list of problems."""
    problems = []
    # Helper closures: `let counter = |name: ..., description: ...| meter.u64_counter(name)...build();`
    helpers = {}
    for m in re.finditer(r"let\s+(\w+)\s*=\s*\|\s*name\b[^|]*\|(.*?)\.build\(\)", source, re.S):
        body = m.group(2)
        builder = re.search(r"meter\s*\.\s*(\w+)\s*\(\s*name\s*\)", body)
        if not builder:
            continue
        unit = re.search(r'\.with_unit\(\s*"([^"]*)"\s*\)', body)
        helpers[m.group(1)] = (kind_of(builder.group(1)), unit.group(1) if unit else "")
    instruments = {}
    for m in re.finditer(r'\b(\w+)\s*\(\s*"(order_process\.[^"]+)"', source):
        fn, name = m.groups()
        if fn in helpers:
            instruments[name] = helpers[fn]
    # Direct builders: `meter.i64_up_down_counter("order_process....")...build()`.
    for m in re.finditer(r'meter\s*\.\s*(\w+)\s*\(\s*"(order_process\.[^"]+)"\s*\)(.*?)\.build\(\)', source, re.S):
        builder, name, chain = m.groups()
        unit = re.search(r'\.with_unit\(\s*"([^"]*)"\s*\)', chain)
        instruments[name] = (kind_of(builder), unit.group(1) if unit else "")
    # Every instrument-looking name must have been understood (a new way of building one would
    # otherwise be missed silently).
    for name in sorted(set(re.findall(r'"(order_process\.[a-z0-9_.]+)"', source))):
        if name not in instruments:
            problems.append(f"{METRICS_RS.relative_to(ROOT)}: cannot tell what kind of instrument {name} is; teach this script")
        elif instruments[name][0] is None:
            problems.append(f"{METRICS_RS.relative_to(ROOT)}: unknown builder for {name}; teach this script")
    if not instruments:
        problems.append(f"{METRICS_RS.relative_to(ROOT)}: no instruments found")
    return instruments, problems


def prometheus_families(instruments):
    """{family name: (type, [series names])} as the exporter serves them."""
    families = {}
    for otel_name, (kind, unit) in instruments.items():
        name = re.sub(r"[^A-Za-z0-9_:]", "_", otel_name)
        if name[0].isdigit():
            name = "_" + name
        suffix = unit_suffix(unit)
        if suffix:
            name = f"{name}_{suffix}"
        if kind == "counter":
            name += "_total"
            series = [name]
        elif kind == "histogram":
            series = [name + s for s in ("_bucket", "_sum", "_count")]
        else:
            series = [name]
        families[name] = (kind, series)
    return families


def label_keys(source):
    return set(re.findall(r'KeyValue::new\(\s*"([^"]+)"', source))


def walk_dashboard(dashboard, visit):
    """Calls visit(node, where) for every object under the panels, annotations and templating,
    `where` naming the titled objects on the way to it."""

    def walk(node, where):
        if isinstance(node, dict):
            title = node.get("title") or node.get("name")
            here = f"{where} / {title}" if isinstance(title, str) and title else where
            visit(node, here)
            for value in node.values():
                walk(value, here)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(dashboard.get("panels", []), "panel")
    walk(dashboard.get("annotations", {}), "annotation")
    walk(dashboard.get("templating", {}), "templating")


def expressions(dashboard):
    """(where, kind, text) for every PromQL expression and variable query of the dashboard."""
    found = []

    def visit(node, where):
        if isinstance(node.get("expr"), str):
            found.append((where, "promql", node["expr"]))

    walk_dashboard({"panels": dashboard.get("panels", []), "annotations": dashboard.get("annotations", {})}, visit)
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else (query or "")
        found.append((f"variable ${var.get('name')}", "variable", text))
    return found


def strip_grafana(expr):
    # $__rate_interval, $job, ${datasource}, [[var]]
    expr = re.sub(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]", "VAR", expr)
    return expr


def analyse(expr):
    """(metric names, label names) used in one PromQL expression."""
    expr = strip_grafana(expr)
    labels = set()
    # Label matchers: {a="x", b=~"y"} (the selectors are dropped afterwards).
    for block in re.findall(r"\{([^{}]*)\}", expr):
        labels.update(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"', block))
    # Grouping and matching clauses: by (a, b), without (...), on (...), ignoring (...), group_x (...).
    for block in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)", expr):
        labels.update(x.strip() for x in block.split(",") if x.strip())
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'", '""', expr)  # strings
    expr = re.sub(r"\{[^{}]*\}", " ", expr)  # selectors
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)", expr):
        word = m.group(1)
        rest = expr[m.end():].lstrip()
        if rest.startswith("("):  # a function or aggregation
            continue
        if word.lower() in PROMQL_WORDS or word == "VAR":
            continue
        names.add(word)
    return names, labels


def variable_metric(query):
    """The metric of a `label_values(metric{...}, label)` / `query_result(...)` variable query."""
    m = re.match(r"\s*label_values\(\s*(.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", query, re.S)
    if m:
        names, labels = analyse(m.group(1))
        return names, labels | {m.group(2)}
    m = re.match(r"\s*query_result\((.*)\)\s*$", query, re.S)
    if m:
        return analyse(m.group(1))
    if re.match(r"\s*(label_names|metrics)\(", query):
        return set(), set()
    return analyse(query)


def datasource_problems(dashboard):
    problems = []

    def visit(node, where):
        ds = node.get("datasource")
        if isinstance(ds, dict) and ds.get("type") != "grafana" and ds.get("uid") != "${datasource}":
            problems.append(f"{where}: data source {ds} is not the ${{datasource}} variable")

    walk_dashboard(dashboard, visit)
    ids = []

    def collect(panels):
        for p in panels:
            ids.append(p.get("id"))
            collect(p.get("panels", []))

    collect(dashboard.get("panels", []))
    for pid in sorted({i for i in ids if ids.count(i) > 1}, key=str):
        problems.append(f"panel id {pid} is used more than once")
    return problems


def scrape_problems(text, families):
    problems = []
    seen = 0
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if not name.startswith("order_process_"):
            continue
        seen += 1
        if name not in families:
            problems.append(f"scrape: {name} ({kind}) is not a name derived from metrics.rs")
        elif families[name][0] != kind:
            problems.append(f"scrape: {name} is a {kind}, metrics.rs makes it a {families[name][0]}")
    if not seen:
        problems.append("scrape: no order_process_* family in it")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--scrape", type=Path, help="a /metrics scrape to check the naming rules against")
    args = parser.parse_args()

    problems = []
    source = METRICS_RS.read_text()
    instruments, found = read_instruments(source)
    problems += found
    families = prometheus_families(instruments)
    series = {s: family for family, (_, names) in families.items() for s in names}
    known_labels = label_keys(source) | SCRAPE_LABELS

    try:
        dashboard = json.loads(args.dashboard.read_text())
    except (OSError, ValueError) as e:
        print(f"FAIL  {args.dashboard}: {e}")
        return 1

    used = set()
    exprs = expressions(dashboard)
    for where, kind, text in exprs:
        names, labels = variable_metric(text) if kind == "variable" else analyse(text)
        if not names:
            problems.append(f"{where}: no metric name found in {text!r}")
        for name in sorted(names):
            if name in series:
                used.add(series[name])
            else:
                hint = ""
                base = re.sub(r"_(total|bucket|sum|count)$", "", name)
                close = [s for s in series if s.startswith(base)]
                if close:
                    hint = f" (did you mean {', '.join(sorted(close))}?)"
                problems.append(f"{where}: unknown metric {name}{hint}")
        for label in sorted(labels - known_labels):
            problems.append(f"{where}: label {label!r} is never set by the service ({text!r})")

    problems += datasource_problems(dashboard)

    if args.dashboard.resolve() == DASHBOARD.resolve():
        if not HELM_COPY.exists():
            problems.append(f"{HELM_COPY.relative_to(ROOT)} is missing: cp {DASHBOARD.relative_to(ROOT)} {HELM_COPY.relative_to(ROOT)}")
        elif HELM_COPY.read_bytes() != DASHBOARD.read_bytes():
            problems.append(f"{HELM_COPY.relative_to(ROOT)} differs from {DASHBOARD.relative_to(ROOT)}: cp {DASHBOARD.relative_to(ROOT)} {HELM_COPY.relative_to(ROOT)}")

    if args.scrape:
        problems += scrape_problems(args.scrape.read_text(), families)

    for p in problems:
        print(f"FAIL  {p}")
    unused = sorted(set(families) - used)
    print(f"{len(exprs)} expressions, {len(used)} of {len(families)} metrics used"
          + (f"; not on the dashboard: {', '.join(unused)}" if unused else ""))
    if problems:
        print(f"{len(problems)} problem(s)")
        return 1
    print("dashboard OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

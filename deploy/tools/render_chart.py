"""Renders a Helm chart offline with Helm's own engine (the Go SDK, v4, through the
helm-python-sdk bindings: no helm binary, no cluster) and lints it as `helm lint --strict`.

Usage: render_chart.py CHART [VALUES.yaml] > manifests.yaml

Prints the rendered manifests as one multi-document YAML stream (templates in name order,
NOTES.txt left out), then exits 1 if the lint reports a warning or an error (printed to
stderr as `lint: PATH: MESSAGE`).
"""

import sys

import helm_python as helm
import yaml

RELEASE = "nri-sysflow"
NAMESPACE = "nri-sysflow"


def main():
    chart_dir = sys.argv[1]
    values = None
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as f:
            values = yaml.safe_load(f)
    try:
        with helm.Chart.load(chart_dir) as chart:
            rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as e:
        print(f"render_chart.py: {chart_dir}: {e}", file=sys.stderr)
        sys.exit(1)
    for name in sorted(rendered):
        text = rendered[name].strip()
        if name.endswith("NOTES.txt") or not text:
            continue
        print(f"---\n# Source: {name}\n{text}")
    report = helm.lint(chart_dir, values, strict=True, namespace=NAMESPACE)
    # Severity: 1 info, 2 warning, 3 error.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    for m in problems:
        print(f"lint: {m['path']}: {m['error']}", file=sys.stderr)
    for e in report["errors"]:
        print(f"lint: {e}", file=sys.stderr)
    sys.exit(1 if problems or report["errors"] else 0)


main()

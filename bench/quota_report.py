"""Turn the raw wrk outputs of bench/quota.sh into one Markdown report.

Usage: python bench/quota_report.py RAW_DIR --meta META_FILE --out REPORT.md

RAW_DIR holds `<path>-<request>.txt` (wrk --latency) and `<path>-<request>.check` (the status
curl saw first) for the paths unlimited, memory, redis and redis-rates. The report gives each
path's requests/second and its ratio to `unlimited`: what enforcing quotas leaves of the
throughput. It goes to REPORT.md with the raw outputs appended, and to stdout without them.
Exits 1 if any run had errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from report import Run, load_meta, parse_wrk

PATHS = ("unlimited", "memory", "redis", "redis-rates")
REQUESTS = {"models": "GET /v1/models", "images": "POST /v1/images/generations"}


def load_runs(raw: Path) -> dict[tuple[str, str], Run]:
    """Every (path, request) run in `raw`; a missing output counts as an empty run."""
    runs = {}
    for path in PATHS:
        for request in REQUESTS:
            out, check = raw / f"{path}-{request}.txt", raw / f"{path}-{request}.check"
            text = out.read_text(encoding="utf-8") if out.exists() else ""
            status = check.read_text(encoding="utf-8").strip() if check.exists() else "missing"
            runs[path, request] = parse_wrk(text, status or "none")
    return runs


def _cell(run: Run, base: Run) -> str:
    flag = " ⚠" if run.problems else ""
    ratio = f" (**{run.rps / base.rps:.2f}x**)" if base.rps > 0 and run is not base else ""
    return f"{run.rps:,.0f}{ratio}{flag}"


def render(runs: dict[tuple[str, str], Run], meta: list[tuple[str, str]], raw: Path | None) -> str:
    """The report; with `raw`, the wrk outputs found there are appended."""
    lines = [f"# Tollgate quota benchmark, {dict(meta).get('date', '')}", "", "## Parameters", ""]
    lines += ["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in meta)]
    lines += ["", "## Results", "", "rps (ratio to `unlimited`); p50 / p99 latency in ms.", ""]
    lines += ["| request | " + " | ".join(PATHS) + " |", "| --- |" + " ---: |" * len(PATHS)]
    for request, label in REQUESTS.items():
        base = runs["unlimited", request]
        cells = [_cell(runs[path, request], base) for path in PATHS]
        lines.append(f"| `{label}` rps | " + " | ".join(cells) + " |")
        latency = [f"{runs[p, request].p50_ms:.2f} / {runs[p, request].p99_ms:.2f}" for p in PATHS]
        lines.append(f"| `{label}` p50 / p99 | " + " | ".join(latency) + " |")
    problems = [
        f"- {path} {REQUESTS[request]}: {'; '.join(run.problems)}"
        for (path, request), run in runs.items()
        if run.problems
    ]
    lines += ["", "## Problems", "", *(problems or ["None: every check was 200, no wrk errors."])]
    if raw is not None:
        lines += ["", "<details><summary>Raw wrk output</summary>", ""]
        for path in PATHS:
            for request in REQUESTS:
                out = raw / f"{path}-{request}.txt"
                text = out.read_text(encoding="utf-8").rstrip() if out.exists() else "(missing)"
                lines += [f"### {path} {REQUESTS[request]}", "", "```", text, "```", ""]
        lines.append("</details>")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw", type=Path, help="folder of wrk outputs and curl checks")
    parser.add_argument("--meta", type=Path, required=True, help="key=value lines")
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    args = parser.parse_args(argv)
    runs, meta = load_runs(args.raw), load_meta(args.meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(runs, meta, args.raw), encoding="utf-8")
    sys.stdout.write(render(runs, meta, None))
    return 1 if any(run.problems for run in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

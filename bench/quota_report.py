"""Turn the raw wrk outputs of bench/quota.sh into one Markdown report.

Usage: python bench/quota_report.py RAW_DIR --meta META_FILE --out REPORT.md

RAW_DIR holds `<path>-<request>.txt` (wrk --latency), `<path>-<request>.check` (the status
curl saw first) and `<path>-<request>.cpu` ("ticks ticks_per_second": Tollgate's CPU time
during the run) for the paths unlimited, memory, redis and redis-rates. The report gives each
path's requests/second and CPU microseconds per request, each as a ratio to `unlimited`: what
enforcing quotas leaves of the throughput, and what it adds to each request's CPU. It goes to
REPORT.md with the raw outputs appended, and to stdout without them. Exits 1 if any run had
errors.
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


def cpu_us(raw: Path, path: str, request: str, run: Run) -> float:
    """Tollgate's CPU microseconds per request served in one run (0 when unknown)."""
    found = raw / f"{path}-{request}.cpu"
    if not found.exists() or run.requests == 0:
        return 0.0
    ticks, per_second = (int(word) for word in found.read_text(encoding="utf-8").split())
    return ticks / per_second * 1e6 / run.requests


def _cpu_cell(us: float, base: float) -> str:
    if us <= 0:
        return "n/a"
    ratio = f" (**{us / base:.2f}x**)" if base > 0 and us is not base else ""
    return f"{us:,.0f}{ratio}"


def _cell(run: Run, base: Run) -> str:
    flag = " ⚠" if run.problems else ""
    ratio = f" (**{run.rps / base.rps:.2f}x**)" if base.rps > 0 and run is not base else ""
    return f"{run.rps:,.0f}{ratio}{flag}"


def render(
    runs: dict[tuple[str, str], Run],
    cpu: dict[tuple[str, str], float],
    meta: list[tuple[str, str]],
    raw: Path | None,
) -> str:
    """The report; with `raw`, the wrk outputs found there are appended."""
    lines = [f"# Tollgate quota benchmark, {dict(meta).get('date', '')}", "", "## Parameters", ""]
    lines += ["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in meta)]
    lines += ["", "## Results", ""]
    lines += ["rps and Tollgate CPU µs per request (each with its ratio to `unlimited`);"]
    lines += ["p50 / p99 latency in ms.", ""]
    lines += ["| request | " + " | ".join(PATHS) + " |", "| --- |" + " ---: |" * len(PATHS)]
    for request, label in REQUESTS.items():
        base = runs["unlimited", request]
        cells = [_cell(runs[path, request], base) for path in PATHS]
        lines.append(f"| `{label}` rps | " + " | ".join(cells) + " |")
        latency = [f"{runs[p, request].p50_ms:.2f} / {runs[p, request].p99_ms:.2f}" for p in PATHS]
        lines.append(f"| `{label}` p50 / p99 | " + " | ".join(latency) + " |")
        base_cpu = cpu["unlimited", request]
        cpus = [_cpu_cell(cpu[p, request], base_cpu) for p in PATHS]
        lines.append(f"| `{label}` CPU µs/request | " + " | ".join(cpus) + " |")
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
    cpu = {key: cpu_us(args.raw, *key, run) for key, run in runs.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(runs, cpu, meta, args.raw), encoding="utf-8")
    sys.stdout.write(render(runs, cpu, meta, None))
    return 1 if any(run.problems for run in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

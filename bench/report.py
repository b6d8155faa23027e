"""Turn the raw wrk outputs of bench/run.sh into one Markdown report.

Usage: python bench/report.py RAW_DIR --meta META_FILE --out REPORT.md

RAW_DIR holds, for every path and request, `<path>-<request>.txt` (wrk --latency output) and
`<path>-<request>.check` (the HTTP status curl saw before wrk ran), plus `<path>-<request>.curl`
(`curl -sv` output) where that status was not 200. META_FILE holds `key=value` lines (machine
and parameters), printed in order. The report goes to REPORT.md with the raw wrk outputs
appended, and to stdout without them. Exits 1 if any run had errors.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

PATHS = ("direct", "floor", "tollgate")
REQUESTS = {
    "models": "GET /v1/models",
    "moderations": "POST /v1/moderations",
    "images": "POST /v1/images/generations",
}
TARGET = 0.7  # Tollgate rps as a share of the floor's, one worker each

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True, slots=True)
class Run:
    """What one wrk run measured, plus the status curl saw before it."""

    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    check: str

    @property
    def problems(self) -> list[str]:
        """Anything that makes this run's numbers suspect."""
        found = []
        if self.check != "200":
            found.append(f"curl check got {self.check}")
        if self.non_2xx:
            found.append(f"{self.non_2xx} non-2xx/3xx of {self.requests}")
        if self.socket_errors:
            found.append(f"{self.socket_errors} socket errors")
        if self.requests == 0:
            found.append("no requests completed")
        return found


def parse_wrk(text: str, check: str) -> Run:
    """The numbers of one `wrk --latency` output."""
    rps = _RPS.search(text)
    total = _TOTAL.search(text)
    percentiles = {int(p): float(v) * _UNITS_MS[u] for p, v, u in _PERCENTILE.findall(text)}
    non_2xx = _NON_2XX.search(text)
    sockets = _SOCKET.search(text)
    return Run(
        rps=float(rps.group(1)) if rps else 0.0,
        requests=int(total.group(1)) if total else 0,
        p50_ms=percentiles.get(50, float("nan")),
        p99_ms=percentiles.get(99, float("nan")),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        check=check,
    )


def load_run(raw: Path, stem: str) -> Run:
    """The run saved in `raw` as `<stem>.txt` and `<stem>.check`; missing files count as empty."""
    out, check = raw / f"{stem}.txt", raw / f"{stem}.check"
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    status = check.read_text(encoding="utf-8").strip() if check.exists() else "missing"
    return parse_wrk(text, status or "none")


def load_runs(raw: Path) -> dict[tuple[str, str], Run]:
    """Every (path, request) run found in `raw`; a missing output counts as an empty run."""
    return {
        (path, request): load_run(raw, f"{path}-{request}")
        for path in PATHS
        for request in REQUESTS
    }


def load_meta(meta: Path) -> list[tuple[str, str]]:
    """The `key=value` lines of `meta`, in order."""
    pairs = []
    for line in meta.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            pairs.append((key.strip(), value.strip()))
    return pairs


def ratio(top: float, bottom: float) -> str:
    """`top / bottom` as `1.23x`, or n/a when there is nothing to divide by."""
    return f"{top / bottom:.2f}x" if bottom > 0 else "n/a"


def latency(run: Run) -> str:
    """p50 / p99 in ms."""
    return f"{run.p50_ms:.2f} / {run.p99_ms:.2f}"


def rps(run: Run) -> str:
    """Requests/second, flagged with ⚠ when the run had problems."""
    flag = " ⚠" if run.problems else ""
    return f"{run.rps:,.0f}{flag}"


def meta_section(title: str, meta: list[tuple[str, str]]) -> list[str]:
    """The report's title (with the date) and its table of machine and parameters."""
    date = dict(meta).get("date", "")
    lines = [f"# {title}, {date}", "", "## Machine and parameters", ""]
    lines += ["| | |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in meta]
    return lines


def problems_section(problems: list[str], raw_dir: Path, clean: str) -> list[str]:
    """The Problems section: `problems` (Markdown list items) with every `curl -sv` trace kept
    in `raw_dir`, or `clean` when there are none."""
    lines = ["", "## Problems", ""]
    if not problems:
        return [*lines, clean]
    lines += ["**⚠ SOME RUNS HAD ERRORS: THEIR NUMBERS ARE NOT VALID.**", "", *problems]
    for trace in sorted(raw_dir.glob("*.curl")):
        text = trace.read_text(encoding="utf-8").rstrip()
        lines += ["", f"`curl -sv` for {trace.stem}:", "", "```", text, "```"]
    return lines


def raw_section(raw_dir: Path, runs: list[tuple[str, str]]) -> list[str]:
    """The wrk outputs `<stem>.txt` of `runs` (stem, heading), folded away."""
    lines = ["", "<details><summary>Raw wrk output</summary>", ""]
    for stem, heading in runs:
        out = raw_dir / f"{stem}.txt"
        text = out.read_text(encoding="utf-8").rstrip() if out.exists() else "(missing)"
        lines += [f"### {heading}", "", "```", text, "```", ""]
    lines.append("</details>")
    return lines


def render(
    runs: dict[tuple[str, str], Run],
    meta: list[tuple[str, str]],
    raw_dir: Path,
    with_raw: bool = False,
) -> str:
    """The report as Markdown; `with_raw` appends the wrk outputs found in `raw_dir`."""
    lines = meta_section("Tollgate passthrough benchmark", meta)
    lines += [
        "",
        "## Results",
        "",
        "rps = requests/second; latency p50 / p99 in ms; ⚠ = see Problems below.",
        "",
        "| request | direct rps | floor rps | tollgate rps | floor/direct | tollgate/floor "
        "| direct p50 / p99 | floor p50 / p99 | tollgate p50 / p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    verdicts = []
    for request, label in REQUESTS.items():
        direct, floor, toll = (runs[path, request] for path in PATHS)
        lines.append(
            f"| `{label}` | {rps(direct)} | {rps(floor)} | {rps(toll)} "
            f"| {ratio(floor.rps, direct.rps)} | **{ratio(toll.rps, floor.rps)}** "
            f"| {latency(direct)} | {latency(floor)} | {latency(toll)} |"
        )
        share = toll.rps / floor.rps if floor.rps > 0 else 0.0
        verdict = "meets the target" if share >= TARGET else "MISSES the target"
        if toll.problems or floor.problems:
            verdict = "INVALID: the run had errors"
        verdicts.append(f"- `{label}`: tollgate/floor = {share:.2f}, {verdict}")
    lines += ["", f"## Target: Tollgate >= {TARGET:.1f}x floor rps (one worker each)", ""]
    lines += verdicts
    problems = [
        f"- **{path} `{REQUESTS[request]}`: {'; '.join(run.problems)}**"
        for (path, request), run in runs.items()
        if run.problems
    ]
    lines += problems_section(
        problems,
        raw_dir,
        "None: every curl check returned 200 and wrk saw no non-2xx or socket errors.",
    )
    if with_raw:
        stems = [(f"{p}-{r}", f"{p} {label}") for p in PATHS for r, label in REQUESTS.items()]
        lines += raw_section(raw_dir, stems)
    return "\n".join(lines) + "\n"


def arguments(description: str | None) -> argparse.ArgumentParser:
    """The command line every report generator takes: RAW_DIR --meta META --out REPORT.md."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("raw", type=Path, help="folder of wrk outputs, checks and counts")
    parser.add_argument("--meta", type=Path, required=True, help="key=value lines")
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    return parser


def publish(out: Path, full: str, shown: str) -> None:
    """Write the report `full` to `out` (its folder made if need be), and `shown` to stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(full, encoding="utf-8")
    sys.stdout.write(shown)


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__).parse_args(argv)
    runs = load_runs(args.raw)
    meta = load_meta(args.meta)
    publish(args.out, render(runs, meta, args.raw, with_raw=True), render(runs, meta, args.raw))
    return 1 if any(run.problems for run in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

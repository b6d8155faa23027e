"""Turn the raw wrk outputs of bench/run.sh into one Markdown report.

Usage: python bench/report.py RAW_DIR --meta META_FILE --out REPORT.md

RAW_DIR holds, for every path and request, `<path>-<request>.txt` (wrk --latency output) and
`<path>-<request>.check` (the HTTP status curl saw before wrk ran), plus `<path>-<request>.curl`
(`curl -sv` output) where that status was not 200. The floor and Tollgate are measured in
rounds, `<path>-<request>.r<N>.txt`, taking turns: each round's tollgate/floor ratio compares
two runs a few seconds apart, so the machine's load drifting during the benchmark shifts both
alike, and the ratio reported is the median of the rounds'. META_FILE holds `key=value`
lines (machine and parameters), printed in order. The report goes to REPORT.md with the raw
wrk outputs appended, and to stdout without them. Exits 1 if any run had errors.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

PATHS = ("direct", "floor", "tollgate")
_ROUND = re.compile(r"\.r(\d+)$")
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


def load_run(raw: Path, stem: str, checked_as: str | None = None) -> Run:
    """The run saved in `raw` as `<stem>.txt` and `<stem>.check` (`<checked_as>.check` for a
    round, checked once for all rounds); missing files count as empty."""
    out, check = raw / f"{stem}.txt", raw / f"{checked_as or stem}.check"
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    status = check.read_text(encoding="utf-8").strip() if check.exists() else "missing"
    return parse_wrk(text, status or "none")


def round_stems(raw: Path, stem: str) -> list[str]:
    """`<stem>.r1`, `<stem>.r2`, ... found in `raw`, in round order; `[stem]` when none."""
    found = [(_ROUND.search(out.stem), out.stem) for out in raw.glob(f"{stem}.r*.txt")]
    rounds = sorted((int(match.group(1)), name) for match, name in found if match)
    return [name for _, name in rounds] or [stem]


def load_rounds(raw: Path, stem: str) -> list[Run]:
    """The runs of `stem`, one per round (each checked by `<stem>.check`)."""
    return [load_run(raw, name, checked_as=stem) for name in round_stems(raw, stem)]


def typical(rounds: list[Run]) -> Run:
    """One run standing for `rounds`: the median rps and latencies, every problem counted."""
    if len(rounds) == 1:
        return rounds[0]
    return Run(
        rps=statistics.median(run.rps for run in rounds),
        requests=sum(run.requests for run in rounds),
        p50_ms=statistics.median(run.p50_ms for run in rounds),
        p99_ms=statistics.median(run.p99_ms for run in rounds),
        non_2xx=sum(run.non_2xx for run in rounds),
        socket_errors=sum(run.socket_errors for run in rounds),
        check=next((run.check for run in rounds if run.check != "200"), rounds[0].check),
    )


def round_ratios(top: list[Run], bottom: list[Run]) -> list[float]:
    """`top / bottom` rps, round by round (rounds with nothing to divide by left out)."""
    return [t.rps / b.rps for t, b in zip(top, bottom, strict=False) if b.rps > 0]


def load_runs(raw: Path) -> dict[tuple[str, str], list[Run]]:
    """Every (path, request) found in `raw`, as its rounds; a missing output is an empty run."""
    return {
        (path, request): load_rounds(raw, f"{path}-{request}")
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


def rounds_section(rounded: dict[str, tuple[list[Run], list[Run]]]) -> list[str]:
    """Each request's rounds: floor and Tollgate rps, and their ratio, round by round."""
    lines = ["", "## Rounds", "", "Floor and Tollgate took turns (the order alternating):", ""]
    lines += ["| request | round | floor rps | tollgate rps | tollgate/floor |"]
    lines += ["| --- | ---: | ---: | ---: | ---: |"]
    for request, (floor, toll) in rounded.items():
        for number, (f, t) in enumerate(zip(floor, toll, strict=False), start=1):
            share = ratio(t.rps, f.rps)
            lines.append(f"| `{REQUESTS[request]}` | {number} | {rps(f)} | {rps(t)} | {share} |")
    return lines


def render(
    rounds: dict[tuple[str, str], list[Run]],
    meta: list[tuple[str, str]],
    raw_dir: Path,
    with_raw: bool = False,
) -> str:
    """The report as Markdown; `with_raw` appends the wrk outputs found in `raw_dir`."""
    runs = {key: typical(found) for key, found in rounds.items()}
    lines = meta_section("Tollgate passthrough benchmark", meta)
    lines += [
        "",
        "## Results",
        "",
        "rps = requests/second (the median of the rounds where there were several); latency "
        "p50 / p99 in ms; tollgate/floor = the median of the rounds' ratios; ⚠ = see Problems "
        "below.",
        "",
        "| request | direct rps | floor rps | tollgate rps | floor/direct | tollgate/floor "
        "| direct p50 / p99 | floor p50 / p99 | tollgate p50 / p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    verdicts = []
    rounded = {}
    for request, label in REQUESTS.items():
        direct, floor, toll = (runs[path, request] for path in PATHS)
        shares = round_ratios(rounds["tollgate", request], rounds["floor", request])
        share = statistics.median(shares) if shares else 0.0
        rounded[request] = (rounds["floor", request], rounds["tollgate", request])
        lines.append(
            f"| `{label}` | {rps(direct)} | {rps(floor)} | {rps(toll)} "
            f"| {ratio(floor.rps, direct.rps)} | **{share:.2f}x** "
            f"| {latency(direct)} | {latency(floor)} | {latency(toll)} |"
        )
        verdict = "meets the target" if share >= TARGET else "MISSES the target"
        if toll.problems or floor.problems:
            verdict = "INVALID: the run had errors"
        verdicts.append(f"- `{label}`: tollgate/floor = {share:.2f}, {verdict}")
    lines += ["", f"## Target: Tollgate >= {TARGET:.1f}x floor rps (one worker each)", ""]
    lines += verdicts
    if any(len(found) > 1 for found in rounds.values()):
        lines += rounds_section(rounded)
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
        stems = [
            (stem, f"{stem.replace('-', ' ', 1)} ({label})")
            for p in PATHS
            for r, label in REQUESTS.items()
            for stem in round_stems(raw_dir, f"{p}-{r}")
        ]
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
    return 1 if any(run.problems for found in runs.values() for run in found) else 0


if __name__ == "__main__":
    sys.exit(main())

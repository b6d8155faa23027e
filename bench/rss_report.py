"""Turn the raw outputs of bench/rss_soak.sh into one Markdown report with its verdict.

Usage: python bench/rss_report.py RAW_DIR --meta META_FILE --first 100000 --out REPORT.md

RAW_DIR holds `boundaries` ("requests rss_kb" lines: before the soak, then after each
segment), `periodic` ("seconds rss_kb" lines, sampled meanwhile), `segment-<n>.txt` (each
segment's wrk output), `tollgate-<request>.check` (the curl checks before the soak, with
`.curl` traces where they failed) and `final-status` (VmHWM and VmRSS at the end). The
target: RSS after the last segment within 10% of RSS after `--first` requests. The report
goes to REPORT.md and stdout. Exits 1 if the target is missed or anything had problems.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from report import (
    Run,
    arguments,
    load_meta,
    meta_section,
    parse_wrk,
    problems_section,
    publish,
)

TOLERANCE = 0.10  # RSS at the end may differ from RSS after --first requests by this share
REQUESTS = ("models", "moderations", "images")


@dataclass(frozen=True, slots=True)
class Soak:
    """What the soak recorded: RSS at request counts, over time, and each segment's run."""

    boundaries: list[tuple[int, int]]
    periodic: list[tuple[int, int]]
    segments: list[Run]
    checks: dict[str, str]
    final: str

    def rss_at(self, requests: int) -> int | None:
        """RSS in kB sampled after `requests` requests, if it was."""
        return dict(self.boundaries).get(requests)

    def problems(self, step: int) -> list[str]:
        """Failed checks, segments with errors or short of their count, missing samples."""
        found = [f"curl check of {r} got {c}" for r, c in self.checks.items() if c != "200"]
        for number, run in enumerate(self.segments, 1):
            found += [f"segment {number}: {p}" for p in run.problems if "curl" not in p]
            if 0 < run.requests < step:
                found.append(f"segment {number}: {run.requests:,} of {step:,} responses")
        if len(self.boundaries) < 3:
            found.append("fewer than two samples after the soak began")
        return found


def _pairs(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) == 2 and all(w.isdigit() for w in words):
            pairs.append((int(words[0]), int(words[1])))
    return pairs


def load(raw: Path) -> Soak:
    """The soak's records in `raw`; missing files count as empty."""
    segments = []
    number = 1
    while (raw / f"segment-{number}.txt").exists():
        text = (raw / f"segment-{number}.txt").read_text(encoding="utf-8")
        segments.append(parse_wrk(text, "200"))
        number += 1
    checks = {}
    for request in REQUESTS:
        check = raw / f"tollgate-{request}.check"
        checks[request] = check.read_text(encoding="utf-8").strip() if check.exists() else "missing"
    final = raw / "final-status"
    return Soak(
        _pairs(raw / "boundaries"),
        _pairs(raw / "periodic"),
        segments,
        checks,
        final.read_text(encoding="utf-8").strip() if final.exists() else "",
    )


def _mib(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def verdict_lines(soak: Soak, first: int, problems: list[str]) -> tuple[list[str], bool]:
    """The target's line, and whether it was met."""
    last_requests, last = soak.boundaries[-1] if soak.boundaries else (0, 0)
    base = soak.rss_at(first)
    if base is None or last_requests <= first:
        return ["- **NO VERDICT**: the samples needed are missing."], False
    change = (last - base) / base
    met = abs(change) <= TOLERANCE and not problems
    verdict = "**PASS**" if met else "**FAIL**"
    if problems and abs(change) <= TOLERANCE:
        verdict = "**INVALID**: the soak had problems"
    line = (
        f"- RSS after {last_requests:,} requests: {_mib(last)} MiB; after {first:,}: "
        f"{_mib(base)} MiB; change **{change:+.1%}** (allowed ±{TOLERANCE:.0%}): {verdict}"
    )
    return [line], met


def render(soak: Soak, meta: list[tuple[str, str]], raw_dir: Path, first: int) -> str:
    """The report as Markdown."""
    problems = soak.problems(first)
    lines = meta_section("Tollgate RSS soak", meta)
    verdict, _ = verdict_lines(soak, first, problems)
    lines += ["", f"## Target: RSS after the soak within {TOLERANCE:.0%} of RSS after {first:,}"]
    lines += ["", *verdict]
    lines += ["", "## RSS after each segment", ""]
    lines += ["| requests | RSS (MiB) | vs after first segment | segment rps |"]
    lines += ["| ---: | ---: | ---: | ---: |"]
    base = soak.rss_at(first)
    for index, (requests, rss) in enumerate(soak.boundaries):
        vs = f"{(rss - base) / base:+.1%}" if base else "n/a"
        run = soak.segments[index - 1] if 0 < index <= len(soak.segments) else None
        speed = f"{run.rps:,.0f}" if run else "(before the soak)"
        lines.append(f"| {requests:,} | {_mib(rss)} | {vs} | {speed} |")
    if soak.final:
        lines += ["", f"At the end: `{'; '.join(soak.final.splitlines())}`."]
    lines += ["", f"## RSS over time (every sample, {len(soak.periodic)})", ""]
    lines += ["| seconds | RSS (MiB) |", "| ---: | ---: |"]
    lines += [f"| {seconds} | {_mib(rss)} |" for seconds, rss in soak.periodic]
    lines += problems_section(
        [f"- **{p}**" for p in problems],
        raw_dir,
        "None: every curl check passed and every segment got its count without errors.",
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--first", type=int, required=True, help="requests of the base sample")
    args = parser.parse_args(argv)
    soak = load(args.raw)
    text = render(soak, load_meta(args.meta), args.raw, args.first)
    publish(args.out, text, text)
    _, met = verdict_lines(soak, args.first, soak.problems(args.first))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

"""Turn the raw outputs of bench/cache.sh into one Markdown report.

Usage: python bench/cache_report.py RAW_DIR --meta META_FILE --out REPORT.md

RAW_DIR holds, for every path, `<path>.txt` (wrk --latency output), `<path>.check` (what the
curl before wrk saw: "200", with the cache's hit header on cached paths) and `<path>.upstream`
(how many requests reached the canned upstream during the measured run), plus `<path>.curl`
where the check failed and `<path>.note` with anything else worth saying. Parsing and the
shared sections come from bench/report.py. The report goes to REPORT.md with the raw wrk
outputs appended, and to stdout without them. Exits 1 if any run had errors, or a cached run
let a request through to the upstream (so not every measured request was a hit).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from report import (
    Run,
    latency,
    load_meta,
    load_run,
    meta_section,
    problems_section,
    ratio,
    raw_section,
    rps,
)

REQUEST = "GET /v1/models"
TARGET = 1.5  # Tollgate cached rps over the floor's pass-through rps, one worker each


@dataclass(frozen=True, slots=True)
class PathSpec:
    """One way of answering wrk: its raw-file stem, its label, and whether it caches."""

    stem: str
    label: str
    what: str
    cached: bool


PATHS = (
    PathSpec("direct", "direct", "the canned nginx upstream itself (reference)", False),
    PathSpec("floor", "floor pass-through", "bench/floor.py, the bare aiohttp forwarder", False),
    PathSpec("tollgate", "tollgate pass-through", "Tollgate, TOLLGATE_CACHE__ENABLED=false", False),
    PathSpec("tollgate-memory", "tollgate cached (memory)", "Tollgate, default memory store", True),
    PathSpec("tollgate-redis", "tollgate cached (redis)", "Tollgate, TOLLGATE_STORE=redis", True),
    PathSpec("nginx-cache", "nginx proxy_cache", "nginx proxy_cache before the upstream", True),
)
# (numerator, denominator, what the ratio says)
RATIOS = (
    ("tollgate-memory", "floor", f"the target for later is >= {TARGET:.1f}x"),
    ("tollgate-memory", "tollgate", "what a hit saves over going upstream"),
    ("tollgate-redis", "tollgate-memory", "a shared store's cost per hit"),
    ("tollgate-memory", "nginx-cache", "how near the floor for any caching proxy"),
)
LABELS = {path.stem: path.label for path in PATHS}


@dataclass(frozen=True, slots=True)
class Measured:
    """One path's wrk run, the requests that reached the upstream meanwhile, and its note."""

    path: PathSpec
    run: Run
    upstream: int | None
    note: str

    @property
    def problems(self) -> list[str]:
        """The run's own problems, and a cached path that was not all hits."""
        found = list(self.run.problems)
        if self.upstream is None:
            found.append("the upstream's request count is missing")
        elif self.path.cached and self.upstream > 0:
            found.append(f"{self.upstream} requests reached the upstream: not all hits")
        elif not self.path.cached and self.upstream < self.run.requests:
            found.append(
                f"only {self.upstream} of {self.run.requests} requests reached the upstream"
            )
        return found


def load(raw: Path) -> dict[str, Measured]:
    """Every path's measurements found in `raw`; missing files count as empty."""
    measured = {}
    for path in PATHS:
        count = raw / f"{path.stem}.upstream"
        text = count.read_text(encoding="utf-8").strip() if count.exists() else ""
        note = raw / f"{path.stem}.note"
        measured[path.stem] = Measured(
            path,
            load_run(raw, path.stem),
            int(text) if text.lstrip("-").isdigit() else None,
            note.read_text(encoding="utf-8").strip() if note.exists() else "",
        )
    return measured


def _cell(measured: Measured) -> str:
    return rps(measured.run) + (" ⚠" if measured.problems and not measured.run.problems else "")


def render(
    measured: dict[str, Measured],
    meta: list[tuple[str, str]],
    raw_dir: Path,
    with_raw: bool = False,
) -> str:
    """The report as Markdown; `with_raw` appends the wrk outputs found in `raw_dir`."""
    floor = measured["floor"].run.rps
    lines = [
        *meta_section("Tollgate cache benchmark", meta),
        "",
        f"## Results: `{REQUEST}`",
        "",
        "rps = requests/second; latency p50 / p99 in ms; upstream = requests that reached the",
        "canned upstream during the measured run (0 on a cached path: every request was a hit;",
        "on direct, wrk's own requests); ⚠ = see Problems below.",
        "",
        "| path | what answers wrk | rps | rps / floor | p50 / p99 | upstream |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for m in measured.values():
        upstream = "missing" if m.upstream is None else f"{m.upstream:,}"
        lines.append(
            f"| {m.path.label} | {m.path.what} | {_cell(m)} | {ratio(m.run.rps, floor)} "
            f"| {latency(m.run)} | {upstream} |"
        )
    lines += ["", "## Ratios (requests/second, within this run)", ""]
    lines += ["| ratio | value | meaning |", "| --- | ---: | --- |"]
    for top, bottom, meaning in RATIOS:
        value = ratio(measured[top].run.rps, measured[bottom].run.rps)
        if measured[top].problems or measured[bottom].problems:
            value += " ⚠"
        lines.append(f"| {LABELS[top]} / {LABELS[bottom]} | **{value}** | {meaning} |")
    cached = measured["tollgate-memory"]
    share = cached.run.rps / floor if floor > 0 else 0.0
    verdict = "reaches the target" if share >= TARGET else "DOES NOT reach the target"
    if cached.problems or measured["floor"].problems:
        verdict = "INVALID: the run had problems"
    lines += [
        "",
        f"## Target (for later): Tollgate cached >= {TARGET:.1f}x the floor's pass-through rps",
        "",
        f"- tollgate cached (memory) / floor pass-through = {share:.2f}: {verdict}",
    ]
    notes = [f"- {m.path.label}: {m.note}" for m in measured.values() if m.note]
    if notes:
        lines += ["", "## Notes", "", *notes]
    problems = [
        f"- **{m.path.label}: {'; '.join(m.problems)}**" for m in measured.values() if m.problems
    ]
    lines += problems_section(
        problems,
        raw_dir,
        "None: every curl check returned 200 (with a hit on the cached paths), wrk saw no "
        "non-2xx or socket errors, and no request of a cached run reached the upstream.",
    )
    if with_raw:
        lines += raw_section(raw_dir, [(p.stem, f"{p.label} {REQUEST}") for p in PATHS])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw", type=Path, help="folder of wrk outputs, checks and counts")
    parser.add_argument("--meta", type=Path, required=True, help="key=value lines")
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    args = parser.parse_args(argv)
    measured = load(args.raw)
    meta = load_meta(args.meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(measured, meta, args.raw, with_raw=True), encoding="utf-8")
    sys.stdout.write(render(measured, meta, args.raw))
    return 1 if any(m.problems for m in measured.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Turn the raw outputs of bench/scale.sh into one Markdown report, with the issue's targets.

Usage: python bench/scale_report.py RAW_DIR --meta META_FILE --connections N --out REPORT.md

RAW_DIR holds, for every path and request, `<path>-<request>.txt` (wrk --latency at N
connections), `<path>-<request>.c1.txt` (the same at 1 connection), `<path>-<request>.check`
(what the curl before wrk saw), `<path>-<request>.upstream` (requests that reached the canned
upstream during the run at N connections), and `<path>-<request>.curl` where a check failed;
and `<path>.counters`, each Tollgate's non-zero counters from /metrics after its runs.
Parsing and the shared sections come from bench/report.py. The report goes to REPORT.md with
the raw wrk outputs appended, and to stdout without them. Exits 1 if any run had problems.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from report import (
    Run,
    arguments,
    load_meta,
    load_run,
    meta_section,
    parse_wrk,
    problems_section,
    publish,
    ratio,
    raw_section,
    rps,
)

PATHS = {
    "direct": "direct",
    "nginx-proxy": "nginx proxy",
    "floor": "floor",
    "tollgate-memory": "tollgate memory",
    "tollgate-redis": "tollgate redis",
}
REQUESTS = {
    "models": "GET /v1/models",
    "moderations": "POST /v1/moderations",
    "images": "POST /v1/images/generations",
}
TOLLGATE = ("tollgate-memory", "tollgate-redis")
# Upstream calls per request Tollgate must make: models is cached, images' verdict is cached.
TOLLGATE_UPSTREAM = {"models": 0, "moderations": 1, "images": 1}


@dataclass(frozen=True, slots=True)
class Target:
    """One of the issue's targets: `top` rps over `bottom` rps must reach `needed`."""

    name: str
    top: tuple[str, str]
    bottom: tuple[str, str]
    needed: float


TARGETS = (
    Target(
        "pass-through >= 0.8x the bare forwarder",
        ("tollgate-memory", "moderations"),
        ("floor", "moderations"),
        0.8,
    ),
    Target(
        "cached read >= 1.5x the bare forwarder's pass-through",
        ("tollgate-memory", "models"),
        ("floor", "models"),
        1.5,
    ),
    *(
        Target(
            f"Redis store >= 0.7x the memory store ({request})",
            ("tollgate-redis", request),
            ("tollgate-memory", request),
            0.7,
        )
        for request in REQUESTS
    ),
)


@dataclass(frozen=True, slots=True)
class Measured:
    """One (path, request): the run at N connections, the run at 1, and the upstream count."""

    path: str
    request: str
    run: Run
    single: Run
    upstream: int | None
    slack: int

    @property
    def expected(self) -> int:
        """Upstream calls per request this path must make (direct: wrk's own requests)."""
        return TOLLGATE_UPSTREAM[self.request] if self.path in TOLLGATE else 1

    @property
    def problems(self) -> list[str]:
        """Both runs' problems, and an upstream count that does not fit the path."""
        found = list(self.run.problems)
        found += [f"at 1 connection: {p}" for p in self.single.problems if "curl" not in p]
        if self.upstream is None:
            found.append("the upstream's request count is missing")
            return found
        floor = self.run.requests * self.expected
        if self.upstream < floor:
            found.append(f"only {self.upstream:,} of {floor:,} expected upstream requests")
        elif self.upstream > floor + self.slack:
            found.append(f"{self.upstream:,} upstream requests, expected {floor:,}: cache misses")
        return found


def load(raw: Path, connections: int) -> dict[tuple[str, str], Measured]:
    """Every (path, request) found in `raw`; missing files count as empty runs."""
    measured = {}
    for path in PATHS:
        for request in REQUESTS:
            stem = f"{path}-{request}"
            run = load_run(raw, stem)
            c1 = raw / f"{stem}.c1.txt"
            single = parse_wrk(c1.read_text(encoding="utf-8") if c1.exists() else "", run.check)
            count = raw / f"{stem}.upstream"
            text = count.read_text(encoding="utf-8").strip() if count.exists() else ""
            upstream = int(text) if text.lstrip("-").isdigit() else None
            # Requests in flight when a run starts or ends reach the upstream uncounted by wrk.
            measured[path, request] = Measured(
                path, request, run, single, upstream, 2 * connections + 4
            )
    return measured


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _added(value: float) -> str:
    return f"{value:+.2f}"


def throughput_section(m: dict[tuple[str, str], Measured], connections: int) -> list[str]:
    """rps of every path, then the ratios the issue asks for."""
    lines = [
        "",
        f"## Throughput at {connections} connections (requests/second)",
        "",
        "| request | " + " | ".join(PATHS.values()) + " |",
        "| --- |" + " ---: |" * len(PATHS),
    ]
    for request, label in REQUESTS.items():
        cells = [rps(m[path, request].run) for path in PATHS]
        lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| request | tollgate memory / floor | tollgate redis / floor | redis / memory "
        "| nginx proxy / floor | floor / direct |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    pairs = (
        ("tollgate-memory", "floor"),
        ("tollgate-redis", "floor"),
        ("tollgate-redis", "tollgate-memory"),
        ("nginx-proxy", "floor"),
        ("floor", "direct"),
    )
    for request, label in REQUESTS.items():
        cells = [
            ratio(m[top, request].run.rps, m[bottom, request].run.rps) for top, bottom in pairs
        ]
        lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
    return lines


def latency_section(m: dict[tuple[str, str], Measured], connections: int) -> list[str]:
    """p50/p99 at 1 and N connections, and what each path adds over direct."""
    lines = [
        "",
        "## Latency (ms), and what each path adds over direct",
        "",
        f"p50 / p99 at 1 connection and at {connections}; **added** = the path's figure less "
        "direct's for the same request and connection count. At "
        f"{connections} connections every server is saturated, so latency there is mostly "
        "queueing: about connections / rps.",
        "",
        f"| request | path | 1 conn p50 / p99 | added p50 / p99 | {connections} conn p50 / p99 "
        "| added p50 / p99 |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for request, label in REQUESTS.items():
        direct = m["direct", request]
        for path, name in PATHS.items():
            one, many = m[path, request].single, m[path, request].run
            added = (
                f"{_added(one.p50_ms - direct.single.p50_ms)} / "
                f"{_added(one.p99_ms - direct.single.p99_ms)}",
                f"{_added(many.p50_ms - direct.run.p50_ms)} / "
                f"{_added(many.p99_ms - direct.run.p99_ms)}",
            )
            if path == "direct":
                added = ("", "")
            lines.append(
                f"| `{label}` | {name} | {_ms(one.p50_ms)} / {_ms(one.p99_ms)} | {added[0]} "
                f"| {_ms(many.p50_ms)} / {_ms(many.p99_ms)} | {added[1]} |"
            )
    return lines


def upstream_section(m: dict[tuple[str, str], Measured], connections: int) -> list[str]:
    """Requests that reached the canned upstream, per request wrk completed."""
    lines = [
        "",
        f"## What reached the upstream (runs at {connections} connections)",
        "",
        "Requests the canned upstream handled during the measured run, per request wrk "
        "completed: 0 for Tollgate's cached models, 1 for its images (the moderation verdict "
        "comes from the cache: a miss would make it 2), 1 everywhere else. Requests in flight "
        "when a run starts or ends make it a little over.",
        "",
        "| request | " + " | ".join(PATHS.values()) + " |",
        "| --- |" + " ---: |" * len(PATHS),
    ]
    for request, label in REQUESTS.items():
        cells = []
        for path in PATHS:
            one = m[path, request]
            if one.upstream is None or one.run.requests == 0:
                cells.append("n/a")
            else:
                cells.append(f"{one.upstream / one.run.requests:.2f}")
        lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
    return lines


def counters_section(raw_dir: Path) -> list[str]:
    """Each Tollgate's non-zero request and error counters (from /metrics) after its runs."""
    lines = ["", "## Tollgate's own counters at the end of its runs (non-zero, from /metrics)"]
    for path in TOLLGATE:
        found = raw_dir / f"{path}.counters"
        text = found.read_text(encoding="utf-8").strip() if found.exists() else "(missing)"
        lines += ["", f"{PATHS[path]}:", "", "```", text or "(none)", "```"]
    return lines


def targets_section(m: dict[tuple[str, str], Measured]) -> list[str]:
    """The issue's targets: each ratio, what it needs, and met or missed."""
    lines = [
        "",
        "## Targets (one worker each, ratios within this run)",
        "",
        "| target | ratio | figures (rps) | needed | verdict |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for target in TARGETS:
        top, bottom = m[target.top], m[target.bottom]
        value = top.run.rps / bottom.run.rps if bottom.run.rps > 0 else 0.0
        verdict = "met" if value >= target.needed else "**MISSED**"
        if top.problems or bottom.problems:
            verdict = "**INVALID**: the run had problems"
        lines.append(
            f"| {target.name} | {PATHS[target.top[0]]} `{REQUESTS[target.top[1]]}` / "
            f"{PATHS[target.bottom[0]]} `{REQUESTS[target.bottom[1]]}` "
            f"| {top.run.rps:,.0f} / {bottom.run.rps:,.0f} = **{value:.2f}x** "
            f"| {target.needed:.1f}x | {verdict} |"
        )
    return lines


def render(
    m: dict[tuple[str, str], Measured],
    meta: list[tuple[str, str]],
    raw_dir: Path,
    connections: int,
    with_raw: bool = False,
) -> str:
    """The report as Markdown; `with_raw` appends the wrk outputs found in `raw_dir`."""
    lines = meta_section("Tollgate scale benchmark", meta)
    lines += ["", "rps = requests/second; ⚠ = see Problems below."]
    lines += targets_section(m)
    lines += throughput_section(m, connections)
    lines += latency_section(m, connections)
    lines += upstream_section(m, connections)
    lines += counters_section(raw_dir)
    problems = [
        f"- **{PATHS[path]} `{REQUESTS[request]}`: {'; '.join(one.problems)}**"
        for (path, request), one in m.items()
        if one.problems
    ]
    lines += problems_section(
        problems,
        raw_dir,
        "None: every curl check passed, wrk saw no non-2xx or socket errors, and every "
        "upstream count fits its path.",
    )
    if with_raw:
        stems = []
        for path, name in PATHS.items():
            for request, label in REQUESTS.items():
                stems.append((f"{path}-{request}", f"{name} {label}, {connections} connections"))
                stems.append((f"{path}-{request}.c1", f"{name} {label}, 1 connection"))
        lines += raw_section(raw_dir, stems)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--connections", type=int, required=True, help="wrk's connections")
    args = parser.parse_args(argv)
    measured = load(args.raw, args.connections)
    meta = load_meta(args.meta)
    full = render(measured, meta, args.raw, args.connections, with_raw=True)
    publish(args.out, full, render(measured, meta, args.raw, args.connections))
    return 1 if any(one.problems for one in measured.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

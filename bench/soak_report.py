"""The soak's report (bench/soak.py writes it): what a run sent, got and found, in Markdown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from soak_traffic import (
    BREAKER_COOLDOWN,
    CAP_IMAGES,
    FAULTS,
    HANG_AFTER,
    REDIS_TIMEOUT,
    UPSTREAM_READ_TIMEOUT,
    Tally,
)


@dataclass
class EndState:
    """What Tollgate says once the traffic has stopped."""

    readyz: str
    in_flight: str
    cap_used: int | None


@dataclass
class Run:
    """What the report is made of."""

    seconds: float
    concurrency: int
    seed: int
    tally: Tally
    start_sample: tuple[int, int]
    end_sample: tuple[int, int]
    end: EndState
    elapsed: float
    load_before: str
    log: Path  # Tollgate's request log
    idle: float  # seconds between the end of traffic and the last sample
    fds: Counter[str]  # the last sample's descriptors by kind


def end_problems(run: Run) -> list[str]:
    """End-of-run checks that failed: each one counts as an unexpected finding."""
    problems = []
    if not run.end.readyz.startswith("200"):
        problems.append(f"/readyz at the end: {run.end.readyz}")
    if run.end.in_flight not in ("0.0", "0"):
        problems.append(f"tollgate_requests_in_flight at the end: {run.end.in_flight}")
    if run.end.cap_used is None or run.end.cap_used < run.tally.cap_admitted:
        problems.append(
            f"user cap: {run.tally.cap_admitted} images admitted, but Redis counts "
            f"{run.end.cap_used} used (a charge was lost)"
        )
    return problems


def _table(header: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _machine() -> list[str]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "proxy"], capture_output=True, text=True, check=False
    ).stdout.strip()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    state = " (proxy/ modified)" if dirty else ""
    return [
        f"- machine: {os.cpu_count()} CPUs ({cpu}), Linux {os.uname().release}, "
        f"Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}",
        f"- tollgate: commit {commit or '?'}{state}",
    ]


def _counts(tally: Tally) -> list[str]:
    rows = sorted(tally.answers.items(), key=lambda item: (item[0][0], -item[1]))
    lines = ["## Answers by kind of request", ""]
    lines += _table(("request", "answer", "count"), [(k, a, n) for (k, a), n in rows])
    errors: Counter[str] = Counter()
    for (_, label), n in tally.answers.items():
        if label != "200":
            errors[label] += n
    lines += ["", "## Answers other than 200, by kind", ""]
    lines += _table(("answer", "count"), errors.most_common())
    return lines


def _faults(tally: Tally) -> list[str]:
    times: Counter[str] = Counter(w.name for w in tally.faults)
    spent: Counter[str] = Counter()
    for w in tally.faults:
        spent[w.name] += round((w.end or w.start) - w.start)
    lines = ["## Faults injected", ""]
    rows = [
        (name, times[name], f"{spent[name]} s", ", ".join(sorted(FAULTS[name])) or "nothing")
        for name in FAULTS
    ]
    lines += _table(("fault", "times", "in force", "answers it explains"), rows)
    started = time.strftime("%H:%M:%S", time.gmtime(tally.wall))
    schedule = ", ".join(f"{w.start:.0f}-{(w.end or w.start):.0f} s {w.name}" for w in tally.faults)
    return [*lines, "", f"Schedule (seconds from {started} UTC): {schedule or 'none'}."]


def _tollgate_log(path: Path) -> list[str]:
    """Tollgate's own account of its 5xx answers and client departures (its request log)."""
    reasons: Counter[tuple[int, str]] = Counter()
    with path.open("rb") as log:
        for raw in log:
            if not raw.startswith(b"{"):
                continue
            line = json.loads(raw)
            status = line.get("status")
            if isinstance(status, int) and (status >= 500 or status == 499):
                why = line.get("quota_reason") or line.get("upstream_error") or line.get("aborted")
                reasons[(status, str(why or "-"))] += 1
    rows = [(status, why, n) for (status, why), n in sorted(reasons.items())]
    lines = ["## Tollgate's log: 5xx and 499 by reason", ""]
    return lines + _table(("status", "quota_reason / upstream_error / aborted", "lines"), rows)


def _process(run: Run) -> list[str]:
    (rss0, fd0), (rss1, fd1) = run.start_sample, run.end_sample
    lines = ["## The Tollgate process", ""]
    lines += _table(
        ("", "start (idle, after warm-up)", f"end (idle, {run.idle:.0f} s after traffic)"),
        [("RSS", f"{rss0 / 1024:.1f} MiB", f"{rss1 / 1024:.1f} MiB"), ("open fds", fd0, fd1)],
    )
    kinds = ", ".join(f"{kind} {n}" for kind, n in run.fds.most_common())
    lines += ["", f"Descriptors at the end: {kinds}."]
    every = max(1, len(run.tally.samples) // 20)
    rows = [(f"{t:.0f} s", f"{rss / 1024:.1f}", fds) for t, rss, fds in run.tally.samples[::every]]
    lines += ["", "Samples during the run:", ""]
    lines += _table(("time", "RSS MiB", "fds"), rows)
    return lines


def report(run: Run, date: str) -> tuple[str, int]:
    """The Markdown report and the number of unexpected findings."""
    tally, problems = run.tally, end_problems(run)
    answered = sum(tally.answers.values())
    bad = sum(tally.unexpected.values()) + len(problems)
    lines = [
        f"# Soak, {date}",
        "",
        "`bash bench/soak.sh` (bench/soak.py): mixed traffic through one Tollgate process "
        "(Redis store with AOF fsync always, quotas, moderation on) in front of "
        "`tollgate fake-upstream --control`, with faults injected on a schedule.",
        "",
        *_machine(),
        f"- 1-minute load average before / after: {run.load_before} / {load_average()}",
        f"- duration: {run.elapsed:.0f} s of traffic (asked {run.seconds:.0f} s); "
        f"concurrency {run.concurrency}; seed {run.seed}",
        f"- requests sent: {tally.sent}; answered or settled: {answered} "
        f"({answered / max(run.elapsed, 1):.0f}/s)",
        f"- hang bound {HANG_AFTER:.0f} s; Tollgate upstream read timeout "
        f"{UPSTREAM_READ_TIMEOUT:.0f} s, Redis timeout {REDIS_TIMEOUT} s, breaker cool-down "
        f"{BREAKER_COOLDOWN:.0f} s",
        f"- over-quota user `cap` ({CAP_IMAGES} images/day): {tally.cap_admitted} admitted; "
        f"Redis counts {run.end.cap_used} used at the end",
        f"- at the end: /readyz {run.end.readyz}; tollgate_requests_in_flight {run.end.in_flight}",
        "",
        f"## Unexpected answers: {bad}",
        "",
    ]
    rows = [(k, a, why, n) for (k, a, why), n in tally.unexpected.most_common()]
    if rows:
        lines += [*_table(("request", "answer", "why", "count"), rows), ""]
    lines += [f"- end check failed: {problem}" for problem in problems]
    lines += [f"- {example}" for example in tally.examples]
    lines += ["", *_counts(tally), "", *_faults(tally), "", *_process(run), ""]
    lines += [*_tollgate_log(run.log), ""]
    return "\n".join(lines), bad


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]

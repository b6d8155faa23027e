"""The verdicts of the report generators (pass-through, scale, RSS soak), run as bench/*.sh
runs them.

Each test writes the raw files a benchmark leaves (wrk outputs, checks, upstream counts, RSS
samples) and runs the generator's command line on them: the figures are made up, the
verdicts (met/missed, pass/fail, problems flagged, exit status) are what is checked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("direct", "nginx-proxy", "floor", "tollgate-memory", "tollgate-redis")
REQUESTS = ("models", "moderations", "images")


def wrk_output(rps: float, requests: int, non_2xx: int = 0) -> str:
    """What `wrk --latency` prints, with the lines the reports read."""
    lines = [
        "Running 10s test @ http://127.0.0.1:1/v1/models",
        "  1 threads and 32 connections",
        "  Latency Distribution",
        "     50%    1.50ms",
        "     75%    2.00ms",
        "     90%    3.00ms",
        "     99%    9.25ms",
        f"  {requests} requests in 10.00s, 1.00MB read",
    ]
    if non_2xx:
        lines.append(f"  Non-2xx or 3xx responses: {non_2xx}")
    lines += [f"Requests/sec:   {rps:.2f}", "Transfer/sec:      1.00MB"]
    return "\n".join(lines) + "\n"


def run_report(script: str, raw: Path, *args: str) -> tuple[int, str]:
    meta = raw.parent / "meta.txt"
    meta.write_text("date=2026-11-21\nconnections=32\n", encoding="utf-8")
    out = raw.parent / "report.md"
    command = [sys.executable, str(ROOT / "bench" / script), str(raw), "--meta", str(meta)]
    done = subprocess.run(
        [*command, "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.read_text(encoding="utf-8").startswith("# Tollgate")
    return done.returncode, done.stdout


def scale_raw(tmp_path: Path, rps: dict[tuple[str, str], float]) -> Path:
    """A clean scale run: every check 200, every upstream count what the path must make."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in PATHS:
        for request in REQUESTS:
            value = rps.get((path, request), 5000.0)
            requests = int(value * 10)
            stem = raw / f"{path}-{request}"
            stem.with_suffix(".txt").write_text(wrk_output(value, requests), encoding="utf-8")
            (raw / f"{path}-{request}.c1.txt").write_text(wrk_output(2000, 20000), "utf-8")
            stem.with_suffix(".check").write_text("200\n", encoding="utf-8")
            cached = path.startswith("tollgate") and request == "models"
            upstream = 0 if cached else requests + 3
            stem.with_suffix(".upstream").write_text(f"{upstream}\n", encoding="utf-8")
    return raw


def target_row(report: str, words: str) -> str:
    return next(line for line in report.splitlines() if line.startswith(f"| {words}"))


def test_scale_targets_are_met_or_missed_by_their_ratios(tmp_path: Path) -> None:
    raw = scale_raw(
        tmp_path,
        {
            ("floor", "moderations"): 4000,
            ("tollgate-memory", "moderations"): 3280,  # 0.82x: met
            ("floor", "models"): 4000,
            ("tollgate-memory", "models"): 5600,  # 1.4x: missed
            ("tollgate-redis", "models"): 3990,  # 0.71x memory: met
            ("tollgate-memory", "images"): 3000,
            ("tollgate-redis", "images"): 2000,  # 0.67x: missed
        },
    )
    status, report = run_report("scale_report.py", raw, "--connections", "32")
    assert status == 0
    assert target_row(report, "pass-through").endswith("= **0.82x** | 0.8x | met |")
    assert target_row(report, "cached read").endswith("= **1.40x** | 1.5x | **MISSED** |")
    assert target_row(report, "Redis store >= 0.7x the memory store (models)").endswith(
        "= **0.71x** | 0.7x | met |"
    )
    assert target_row(report, "Redis store >= 0.7x the memory store (images)").endswith(
        "= **0.67x** | 0.7x | **MISSED** |"
    )
    assert "None: every curl check passed" in report


def test_scale_flags_cached_rows_that_reached_the_upstream(tmp_path: Path) -> None:
    raw = scale_raw(tmp_path, {})
    (raw / "tollgate-memory-models.upstream").write_text("120\n", encoding="utf-8")
    (raw / "tollgate-redis-images.upstream").write_text("100000\n", encoding="utf-8")  # 2 each
    status, report = run_report("scale_report.py", raw, "--connections", "32")
    assert status == 1
    assert "tollgate memory `GET /v1/models`: 120 upstream requests, expected 0" in report
    assert "tollgate redis `POST /v1/images/generations`: 100,000 upstream requests" in report
    assert "**INVALID**" in target_row(report, "cached read")


def test_scale_flags_errors_and_failed_checks(tmp_path: Path) -> None:
    raw = scale_raw(tmp_path, {})
    text = wrk_output(400, 4000, non_2xx=3000)
    (raw / "tollgate-redis-models.txt").write_text(text, encoding="utf-8")
    (raw / "floor-moderations.check").write_text("502\n", encoding="utf-8")
    status, report = run_report("scale_report.py", raw, "--connections", "32")
    assert status == 1
    assert "3000 non-2xx/3xx of 4000" in report
    assert "curl check got 502" in report
    assert "**INVALID**" in target_row(report, "pass-through")


def soak_raw(tmp_path: Path, samples: list[tuple[int, int]], step: int = 100_000) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = [f"{requests} {rss}" for requests, rss in samples]
    (raw / "boundaries").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (raw / "periodic").write_text("0 60000\n5 61000\n", encoding="utf-8")
    for number in range(1, len(samples)):
        (raw / f"segment-{number}.txt").write_text(wrk_output(3000, step), encoding="utf-8")
    for request in REQUESTS:
        (raw / f"tollgate-{request}.check").write_text("200\n", encoding="utf-8")
    return raw


def ten_segments(last: int) -> list[tuple[int, int]]:
    return [(0, 60000), *((n * 100_000, 64000) for n in range(1, 10)), (1_000_000, last)]


def test_rss_within_ten_percent_passes(tmp_path: Path) -> None:
    status, report = run_report(
        "rss_report.py", soak_raw(tmp_path, ten_segments(70_000)), "--first", "100000"
    )
    assert status == 0
    assert "change **+9.4%** (allowed ±10%): **PASS**" in report


def test_rss_growing_past_ten_percent_fails(tmp_path: Path) -> None:
    status, report = run_report(
        "rss_report.py", soak_raw(tmp_path, ten_segments(70_500)), "--first", "100000"
    )
    assert status == 1
    assert "change **+10.2%** (allowed ±10%): **FAIL**" in report


def test_rss_soak_with_a_short_segment_is_invalid(tmp_path: Path) -> None:
    raw = soak_raw(tmp_path, ten_segments(64_000))
    (raw / "segment-4.txt").write_text(wrk_output(100, 30_000), encoding="utf-8")
    status, report = run_report("rss_report.py", raw, "--first", "100000")
    assert status == 1
    assert "segment 4: 30,000 of 100,000 responses" in report
    assert "**INVALID**" in report


def passthrough_raw(tmp_path: Path, rounds: dict[str, list[tuple[float, float]]]) -> Path:
    """A clean pass-through run: one direct run per request, then (floor, tollgate) rps per
    round for each request in `rounds` (others: 5000 and 4000, three rounds)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for request in REQUESTS:
        (raw / f"direct-{request}.txt").write_text(wrk_output(90000, 900000), encoding="utf-8")
        for path in ("direct", "floor", "tollgate"):
            (raw / f"{path}-{request}.check").write_text("200\n", encoding="utf-8")
        for number, pair in enumerate(rounds.get(request, [(5000, 4000)] * 3), start=1):
            for path, value in zip(("floor", "tollgate"), pair, strict=True):
                out = raw / f"{path}-{request}.r{number}.txt"
                out.write_text(wrk_output(value, int(value * 5)), encoding="utf-8")
    return raw


def test_passthrough_ratio_is_the_median_of_the_rounds_ratios(tmp_path: Path) -> None:
    """Round by round 0.80, 0.50, 0.65: the ratio is 0.65 (a miss), not the 0.80 that the
    medians of the two paths' rps (1000 and 800) would make."""
    rounds = {"images": [(1000.0, 800.0), (2000.0, 1000.0), (1000.0, 650.0)]}
    status, report = run_report("report.py", passthrough_raw(tmp_path, rounds))
    assert status == 0
    assert "- `POST /v1/images/generations`: tollgate/floor = 0.65, MISSES the target" in report
    assert "- `GET /v1/models`: tollgate/floor = 0.80, meets the target" in report
    assert "| `POST /v1/images/generations` | 2 | 2,000 | 1,000 | 0.50x |" in report


def test_passthrough_with_errors_in_one_round_is_invalid(tmp_path: Path) -> None:
    raw = passthrough_raw(tmp_path, {})
    (raw / "tollgate-models.r2.txt").write_text(wrk_output(4000, 20000, 500), encoding="utf-8")
    status, report = run_report("report.py", raw)
    assert status == 1
    assert "- `GET /v1/models`: tollgate/floor = 0.80, INVALID: the run had errors" in report
    assert "500 non-2xx/3xx of 60000" in report

"""The moderation benchmark's report: image generation with moderation on, as ratios to off."""

from __future__ import annotations

import argparse
from pathlib import Path

from report import Run, latency, load_meta, load_run, meta_section, ratio, rps

PATHS = (
    ("off", "moderation off"),
    ("cached", "moderation on, verdicts cached (same prompt)"),
    ("cold", "moderation on, verdicts cold (new prompt each request)"),
)


def render(runs: dict[str, Run], meta: list[tuple[str, str]]) -> str:
    """A Markdown report: one row a path, with its ratio to moderation off."""
    off = runs["off"].rps
    lines = [
        "# Moderation benchmark: POST /v1/images/generations",
        "",
        *meta_section("Machine and parameters", meta),
        "",
        "## Results",
        "",
        "| path | rps | / moderation off | p50 / p99 ms | problems |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, title in PATHS:
        run = runs[name]
        problems = "; ".join(run.problems) or "none"
        lines.append(
            f"| {title} | {rps(run)} | {ratio(run.rps, off)} | {latency(run)} | {problems} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the report; 1 when a run had problems."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw", type=Path)
    parser.add_argument("--meta", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    runs = {name: load_run(args.raw, name) for name, _ in PATHS}
    text = render(runs, load_meta(args.meta))
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 1 if any(run.problems for run in runs.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Reading Prometheus's text format in tests, with prometheus_client's own parser."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample in `text`, keyed by name and label set."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample named `name` with exactly these labels, or None when there is none."""
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample named `name` whose labels include these."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    """The values `label` takes among the samples named `name`."""
    return {dict(have)[label] for (n, have) in samples if n == name and label in dict(have)}


async def scrape(url: str) -> tuple[str, str]:
    """GET a `/metrics` URL: its content type and text."""
    async with aiohttp.ClientSession() as client:
        async with client.get(url) as response:
            assert response.status == 200
            return response.headers["Content-Type"], await response.text()

"""Reading Prometheus text exposition in tests: ``figure(text, name, **labels)`` adds up the
samples of ``name`` whose labels include ``labels`` (0 when there are none)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def figure(text: str, name: str, **labels: str) -> float:
    return sum(
        value
        for sample, have, value in samples(text)
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )


def names(text: str) -> set[str]:
    """Every sample name exported (``_bucket``, ``_count``, ``_total`` … included)."""
    return {sample for sample, _labels, _value in samples(text)}

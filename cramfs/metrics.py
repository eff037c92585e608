"""Prometheus families from the statistics table, for `.cram/metrics` and the exporter.

Both outputs are built here, by one function, from the same statistics: a name,
a type, a help text or a label cannot differ between the file a device serves
and what `cramctl exporter` serves for it. The exporter only adds one label,
`mountpoint`, to tell the mounts it merges apart. The text rows of the table
(danger, compressor, mode, engine) are labels of `cramfs_info`, each under its
statistic's name, which is also the mount option's (`compressor`, not zram's
`algorithm`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .stats import COUNTER, NUMERIC, STATS, TEXT

INFO_NAME = "cramfs_info"
INFO_LABELS: tuple[str, ...] = tuple(s.name for s in STATS if s.unit == TEXT)
INFO_HELP = "The device's text statistics as labels: " + ", ".join(INFO_LABELS) + "."


def _value(value: Any) -> float:
    # stat.json writes an infinite ratio (nothing but same-filled pages) as null
    return float("inf") if value is None else float(value)


def families(docs: Sequence[Mapping[str, Any]], by: Sequence[str] = ()) -> Iterator[Metric]:
    """One family per numeric statistic, then `cramfs_info`, with a sample for each of
    `docs` (statistics by name, as Namespace.stats() and stat.json give them), each
    labelled with the `by` keys of its doc."""
    for st in NUMERIC:
        family: GaugeMetricFamily | CounterMetricFamily
        if st.kind == COUNTER:
            # prometheus_client names a counter family without its _total
            family = CounterMetricFamily(st.metric_name.removesuffix("_total"), st.help,
                                         labels=list(by))
        else:
            family = GaugeMetricFamily(st.metric_name, st.help, labels=list(by))
        for doc in docs:
            family.add_metric([str(doc[k]) for k in by], _value(doc.get(st.name)))
        yield family
    info = GaugeMetricFamily(INFO_NAME, INFO_HELP, labels=[*by, *INFO_LABELS])
    for doc in docs:
        info.add_metric([*(str(doc[k]) for k in by),
                         *(str(doc.get(name, "")) for name in INFO_LABELS)], 1)
    yield info


def _number(value: float) -> str:
    value = float(value)
    if value == float("inf"):
        return "+Inf"
    return str(int(value)) if value.is_integer() else repr(value)


def _escaped(text: str, quote: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def exposition(stats: Mapping[str, Any]) -> str:
    """One device's families in the Prometheus text format (0.0.4): `.cram/metrics`.

    The families are families()'s, as the exporter's are; only the writing is done
    here rather than by prometheus_client, to keep whole numbers whole for a reader
    of the file (67108864, where it writes 6.7108864e+07): the same value to a parser."""
    out = []
    for family in families([stats]):
        # the text format names a counter's family after its sample, _total and all
        name = family.name + ("_total" if family.type == "counter" else "")
        out.append(f"# HELP {name} {_escaped(family.documentation, False)}\n"
                   f"# TYPE {name} {family.type}\n")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escaped(v, True)}"' for k, v in sample.labels.items())
            out.append(f"{sample.name}{'{' + labels + '}' if labels else ''} "
                       f"{_number(sample.value)}\n")
    return "".join(out)

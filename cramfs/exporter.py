"""`cramctl exporter`: every mounted cramfs device's statistics for Prometheus.

`.cram/metrics` is a file, and Prometheus scrapes HTTP. This serves the same
families, built by the same function (metrics.families), for every mount at
once: one family per statistic, merged across mounts, each sample labelled with
its mountpoint.
prometheus_client's collector and HTTP server do the rest, including the
negotiation between the text format and OpenMetrics (by the Accept header).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator

from prometheus_client import start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .cramctl import CtlError, find_mounts, read_stats
from .metrics import families


class CramfsCollector(Collector):
    """Reads every mount's stat.json at each scrape; a mount that vanished mid-scrape
    is left out of that scrape."""

    def collect(self) -> Iterator[Metric]:
        docs = []
        for mount in find_mounts():
            try:
                docs.append(read_stats(mount))
            except CtlError:
                continue
        yield from families(docs, by=("mountpoint",))


def registry() -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(CramfsCollector())
    return reg


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CtlError(f"--listen wants ADDR:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(listen: str) -> int:
    host, port = parse_listen(listen)
    try:
        server, _ = start_http_server(port, addr=host, registry=registry())
    except OSError as e:
        raise CtlError(f"cannot listen on {listen}: {e.strerror}") from None
    print(f"cramctl exporter: serving http://{listen}/metrics", file=sys.stderr, flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.shutdown()
    return 0

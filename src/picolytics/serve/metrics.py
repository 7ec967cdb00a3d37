"""Prometheus metrics, in a registry of their own, with bounded label sets only.

No label ever carries a client-controlled value (domain, path, IP, User-Agent): the
only labels are drop reasons, a fixed set. Request handlers never touch these
objects: they bump plain integers in `PipelineStats`, and `sync` copies the changes
here once per second and before every scrape, which keeps the hot path cheap.

With several worker processes each worker writes its values to files in
PROMETHEUS_MULTIPROC_DIR and the admin server aggregates them (prometheus_client's
multiprocess mode), so /metrics describes the whole server, not one worker.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from picolytics import __version__
from picolytics.accounting import DROP_REASONS, PipelineStats

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 4000, 6400, 10000, 50000)
# Background runs that did not do their work, by task and outcome (closed sets).
BackgroundTask = Literal["maintenance", "prune"]
MissedOutcome = Literal["failed", "skipped"]
BACKGROUND_TASKS: tuple[BackgroundTask, ...] = ("maintenance", "prune")
MISSED_OUTCOMES: tuple[MissedOutcome, ...] = ("failed", "skipped")


def enable_multiprocess(folder: Path) -> None:
    """Switch this process (and the workers it forks) to multiprocess metrics."""
    os.environ[MULTIPROC_ENV] = str(folder)
    # prometheus_client picks its value class when imported; pick again now.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


class Metrics:
    """The metric objects of one process, and the sync from its pipeline counters."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # In multiprocess mode values go to files, not to a registry of this process.
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        target = None if multiprocess_dir() else self.registry
        self.accepted = Counter(
            "picolytics_events_accepted", "Events accepted into the queue", registry=target
        )
        self.written = Counter(
            "picolytics_events_written", "Events written to PostgreSQL", registry=target
        )
        self.dropped = Counter(
            "picolytics_events_dropped",
            "Events refused or lost, by reason",
            ["reason"],
            registry=target,
        )
        self.new_sites_refused = Counter(
            "picolytics_new_sites_refused",
            "Events refused because MAX_NEW_SITES_PER_HOUR new sites were let through already",
            registry=target,
        )
        self.database_errors = Counter(
            "picolytics_database_errors", "Failed database writes (each retried)", registry=target
        )
        self.sessions_opened = Counter(
            "picolytics_sessions_opened", "Visits started", registry=target
        )
        self.queue_depth = Gauge(
            "picolytics_queue_depth",
            "Events waiting to be written",
            registry=target,
            multiprocess_mode="livesum",
        )
        self.queue_capacity = Gauge(
            "picolytics_queue_capacity",
            "Size of the event queue",
            registry=target,
            multiprocess_mode="livesum",
        )
        self.queue_fill = Gauge(
            "picolytics_queue_fill_ratio",
            "How full the event queue is, 0 to 1, by count or bytes (the fullest worker's)",
            registry=target,
            multiprocess_mode="livemax",
        )
        self.database_up = Gauge(
            "picolytics_database_up",
            "1 while the last database write succeeded",
            registry=target,
            multiprocess_mode="livemin",
        )
        self.batch_size = Histogram(
            "picolytics_batch_size_events",
            "Events per written batch",
            buckets=BATCH_BUCKETS,
            registry=target,
        )
        self.batch_write = Histogram(
            "picolytics_batch_write_seconds",
            "Time to write one batch",
            buckets=SECONDS_BUCKETS,
            registry=target,
        )
        self.ingest_to_write = Histogram(
            "picolytics_ingest_to_write_seconds",
            "From the request of each batch's oldest event to its commit",
            buckets=SECONDS_BUCKETS,
            registry=target,
        )
        self.background_missed = Counter(
            "picolytics_background_runs_missed",
            "Maintenance and prune runs that failed or were skipped (another process held "
            "the prune lock)",
            ["task", "outcome"],
            registry=target,
        )
        for task in BACKGROUND_TASKS:
            for outcome in MISSED_OUTCOMES:
                self.background_missed.labels(task, outcome)  # every series from the start
        self.build_info = Gauge(
            "picolytics_build_info",
            "Version of picolytics",
            ["version", "python"],
            registry=target,
            multiprocess_mode="max",
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        for reason in DROP_REASONS:
            self.dropped.labels(reason)  # every series exists from the start, at 0
        self._synced = PipelineStats()
        self._synced_new_sites_refused = 0

    def missed_run(self, task: BackgroundTask, outcome: MissedOutcome) -> None:
        """Count one maintenance or prune run that did not do its work."""
        self.background_missed.labels(task, outcome).inc()

    def observe_batch(
        self, size: int, write_seconds: float, oldest_age_seconds: float, new_sessions: int
    ) -> None:
        self.batch_size.observe(size)
        self.batch_write.observe(write_seconds)
        self.ingest_to_write.observe(oldest_age_seconds)
        self.sessions_opened.inc(new_sessions)

    def sync(
        self,
        stats: PipelineStats,
        queue_depth: int,
        queue_capacity: int,
        database_ok: bool,
        *,
        new_sites_refused: int = 0,
        queue_fill: float = 0.0,
    ) -> None:
        """Copy what changed in the pipeline's counters (and the new-site gate's
        refusals) since the last sync."""
        synced = self._synced
        self.accepted.inc(stats.accepted - synced.accepted)
        self.written.inc(stats.written - synced.written)
        self.database_errors.inc(stats.database_errors - synced.database_errors)
        for reason in DROP_REASONS:  # the closed set: a reason outside it is a type error
            self.dropped.labels(reason).inc(stats.dropped[reason] - synced.dropped[reason])
        synced.accepted, synced.written = stats.accepted, stats.written
        synced.database_errors = stats.database_errors
        synced.dropped = stats.dropped.copy()
        self.new_sites_refused.inc(new_sites_refused - self._synced_new_sites_refused)
        self._synced_new_sites_refused = new_sites_refused
        self.queue_depth.set(queue_depth)
        self.queue_capacity.set(queue_capacity)
        self.queue_fill.set(queue_fill)
        self.database_up.set(1 if database_ok else 0)


class HostCollector(Collector):
    """Host load, memory and CPU use from /proc (for hosts without node_exporter)."""

    def __init__(self) -> None:
        self._last_cpu = _cpu_times()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        load1 = float(Path("/proc/loadavg").read_text().split()[0])
        yield GaugeMetricFamily("picolytics_host_load1", "Host load average, 1 minute", value=load1)
        meminfo = _meminfo()
        used = meminfo["MemTotal"] - meminfo.get("MemAvailable", meminfo["MemFree"])
        yield GaugeMetricFamily(
            "picolytics_host_memory_used_bytes", "Host memory in use", value=used * 1024
        )
        yield GaugeMetricFamily(
            "picolytics_host_memory_total_bytes", "Host memory", value=meminfo["MemTotal"] * 1024
        )
        now = _cpu_times()
        busy = now[0] - self._last_cpu[0]
        total = now[1] - self._last_cpu[1]
        self._last_cpu = now
        yield GaugeMetricFamily(
            "picolytics_host_cpu_used_ratio",
            "Share of host CPU time in use since the last scrape",
            value=busy / total if total else 0.0,
        )


def _meminfo() -> dict[str, int]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0])
    return values


def _cpu_times() -> tuple[int, int]:
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def exposition_registry(metrics: Metrics | None, host_metrics: bool) -> CollectorRegistry:
    """The registry /metrics reads: this process's, or every worker's files merged."""
    if multiprocess_dir() is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        assert metrics is not None
        registry = metrics.registry
    ProcessCollector(registry=registry)
    if host_metrics:
        registry.register(HostCollector())
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

"""`/metrics` of `volt web`: Prometheus' text format, written by prometheus_client.

Every value is read from Redis at each scrape — the counters and histograms that the store keeps in
the transactions that start and end builds (store/metrics.py), the queue, the runners' heartbeats —
so any `volt web` process serves the same numbers, and they survive restarts of every process.
Nothing is counted in this process's memory. Served as text format 0.0.4, which every Prometheus
reads (Volt's names need none of 1.0.0's escaping).
"""

from __future__ import annotations

from collections.abc import Iterator

import flask
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from voltci.store import Store
from voltci.store.metrics import BUILD_DURATION, QUEUE_WAIT

RUNNER_STATES = ("idle", "busy", "gone")


class VoltCollector(Collector):
    """Volt's metrics, read from Redis when collected."""

    def __init__(self, store: Store):
        self.store = store

    def collect(self) -> Iterator[Metric]:
        counters = self.store.metrics.counters()
        depth = GaugeMetricFamily("volt_queue_depth", "Builds waiting for a runner, by repository.",
                                  labels=["repository"])
        queued = self.store.metrics.queued_by_repo()
        for repo in sorted(set(self.store.repos.known()) | set(queued)):
            depth.add_metric([repo], queued.get(repo, 0))
        yield depth
        runners = GaugeMetricFamily("volt_runners", "Runners by state: alive and idle, alive and building, gone "
                                    "(stopped sending heartbeats within the last hour).", labels=["state"])
        states = dict.fromkeys(RUNNER_STATES, 0)
        for row in self.store.runners.table():
            states["gone" if not row.alive else "busy" if row.build else "idle"] += 1
        for state in RUNNER_STATES:
            runners.add_metric([state], states[state])
        yield runners
        builds = CounterMetricFamily("volt_builds", "Builds ended, by repository and status.",
                                     labels=["repository", "status"])
        for (repo, status), count in sorted(counters.builds.items()):
            builds.add_metric([repo, status], count)
        yield builds
        for name, about in ((BUILD_DURATION, "How long builds ran, from start to end."),
                            (QUEUE_WAIT, "How long builds waited in the queue before a runner took them.")):
            found = counters.histograms[name]
            buckets = [(floatToGoString(float(bound)), count) for bound, count in found.buckets]  # "1.0", "+Inf"
            yield HistogramMetricFamily(f"volt_{name}", about, buckets=buckets, sum_value=found.sum)
        lost = CounterMetricFamily("volt_lost_attempts", "Attempts lost with their runner (re-dispatched or given up).")
        lost.add_metric([], counters.lost)
        yield lost
        for event, about in (("failovers", "Changes of the Redis primary (a failover or a restart) a Volt process saw, "
                                           "by kind of process."),
                             ("writes_retried", "Writes to Redis tried again after a failover or an outage, by kind "
                                                "of process.")):
            family = CounterMetricFamily(f"volt_{event}", about, labels=["process"])
            for (kind, process), count in sorted(counters.events.items()):
                if kind == event:
                    family.add_metric([process], count)
            yield family
        statuses = CounterMetricFamily("volt_forge_statuses", "Commit statuses posted to forges, by forge kind and "
                                       "result: sent, retried (the forge was down or asked to wait), refused (a "
                                       "4xx answer: a wrong token, a missing repository).", labels=["forge", "result"])
        for (forge, result), count in sorted(counters.forge_statuses.items()):
            statuses.add_metric([forge, result], count)
        yield statuses
        waiting = GaugeMetricFamily("volt_forge_statuses_waiting", "Builds whose forge has commit statuses coming "
                                    "(one a build, however many changes wait).")
        waiting.add_metric([], self.store.statuses.waiting())
        yield waiting


def exposition(store: Store) -> bytes:
    """The metrics in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VoltCollector(store))
    return generate_latest(registry)


def register(app: flask.Flask, store: Store) -> None:
    """Serve /metrics on `app`."""

    @app.get("/metrics")
    def prometheus_metrics() -> flask.Response:
        return flask.Response(exposition(store), content_type=CONTENT_TYPE_PLAIN_0_0_4)

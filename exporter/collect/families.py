"""The mapping from one collection of one Room to Prometheus metric families.

A fresh collection runs inside every `collect()` call, so each scrape gets its own consistent result and
overlapping scrapes never share state. Sample exposition for a Room that answered:

    trueconf_up 1
    trueconf_scrape_duration_seconds 0.004
    trueconf_scrape_error{reason="connect"} 0          (one series per reason)
    trueconf_outgoing_file_requests{destination="peer",status="downloading"} 1
    trueconf_outgoing_file_requests_size_bytes{destination="peer",status="downloading"} 3200
    trueconf_outgoing_file_requests_oldest_pending_age_seconds{status="downloading"} 1.2e+08
    trueconf_outgoing_file_requests_oldest_pending_timestamp_seconds{status="downloading"} 1.659251271e+09
    trueconf_outgoing_file_requests_malformed 0

For a Room that did not answer, only `trueconf_up 0`, the duration and `trueconf_scrape_error` are exposed:
zeros for the request gauges would lie.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.build import build_labels
from exporter.collect.collection import INTERNAL_ERROR, Collection, log_internal_error
from exporter.room import Reason
from exporter.room.file_requests import DESTINATIONS, PENDING_STATUSES, STATUSES, Snapshot

PREFIX = "trueconf"
REQUESTS = f"{PREFIX}_outgoing_file_requests"


class RoomCollector(Collector):
    """Collects one Room per `collect()` call through `collect_once`, a zero-argument callable."""

    def __init__(self, collect_once: Callable[[], Collection]) -> None:
        self._collect_once = collect_once

    def describe(self) -> list[Metric]:
        """Nothing to describe up front: registering must not open a connection to the Room."""
        return []

    def collect(self) -> Iterator[Metric]:
        collection = self._collect_once()
        try:
            families = list(collection_metrics(collection))
        except Exception:  # noqa: BLE001 - the last resort: trueconf_up 0, never a half-written answer
            log_internal_error("the metrics of a collection", collection.target)
            families = list(
                collection_metrics(
                    replace(collection, snapshot=None, error=INTERNAL_ERROR),
                )
            )
        yield from families


class BuildInfoCollector(Collector):
    """`trueconf_exporter_build_info{version,revision,python_version} 1`: which exporter build is running."""

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        labels = build_labels()
        info = GaugeMetricFamily(
            f"{PREFIX}_exporter_build_info",
            "A metric with a constant 1 labelled by the exporter's version, revision and Python version.",
            labels=list(labels),
        )
        info.add_metric(list(labels.values()), 1)
        yield info


def collection_metrics(collection: Collection) -> Iterator[Metric]:
    """Every metric family of one collection."""
    yield GaugeMetricFamily(
        f"{PREFIX}_up",
        "1 if this scrape got a valid reply from the TrueConf Room, else 0.",
        value=int(collection.up),
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_scrape_duration_seconds",
        "Seconds this collection from the TrueConf Room took.",
        value=collection.duration_seconds,
    )
    failed_reason = collection.error.reason if collection.error else None
    errors = GaugeMetricFamily(
        f"{PREFIX}_scrape_error",
        "1 for the reason this scrape of the TrueConf Room failed, 0 for every other reason; all 0 when up.",
        labels=["reason"],
    )
    for reason in Reason:
        errors.add_metric([reason.value], int(reason == failed_reason))
    yield errors
    if collection.snapshot is not None:
        yield from snapshot_metrics(collection.snapshot, collection.collected_at)


def snapshot_metrics(snapshot: Snapshot, now: float) -> Iterator[Metric]:
    """The request gauges of a Room that answered; every label combination present, zeros included."""
    counts = GaugeMetricFamily(
        REQUESTS,
        "Outgoing file requests the Room lists, by status and destination (a peer or a group conference).",
        labels=["status", "destination"],
    )
    sizes = GaugeMetricFamily(
        f"{REQUESTS}_size_bytes",
        "Sum of the sizes of the outgoing file requests, by status and destination.",
        labels=["status", "destination"],
    )
    for status in STATUSES:
        for destination in DESTINATIONS:
            counts.add_metric([status, destination], snapshot.counts[(status, destination)])
            sizes.add_metric([status, destination], snapshot.size_bytes[(status, destination)])
    yield counts
    yield sizes

    ages = GaugeMetricFamily(
        f"{REQUESTS}_oldest_pending_age_seconds",
        "Age of the oldest request in this status, computed at scrape time against the exporter's clock; "
        "0 when there is none.",
        labels=["status"],
    )
    created = GaugeMetricFamily(
        f"{REQUESTS}_oldest_pending_timestamp_seconds",
        "Creation time (Unix seconds) of the oldest request in this status; absent when there is none.",
        labels=["status"],
    )
    for status in PENDING_STATUSES:
        ages.add_metric([status], snapshot.oldest_pending_age(status, now))
        created_at = snapshot.oldest_pending_created_at[status]
        if created_at is not None:
            created.add_metric([status], created_at)
    yield ages
    yield created
    yield GaugeMetricFamily(
        f"{REQUESTS}_malformed",
        "Entries of the last reply that had a defect (a missing or non-numeric status, size or timestamp, "
        "or not an object).",
        value=snapshot.malformed,
    )

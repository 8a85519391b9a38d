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
    trueconf_scrape_method_success{method="getOutgoingFilesRequests"} 1      (one series per method asked)

and, when the scrape asked the optional methods and the Room answered them (reference §5):

    trueconf_incoming_file_requests{source="peer",status="waiting"} 1           (every status x source)
    trueconf_incoming_file_requests_size_bytes{source="peer",status="waiting"} 500
    trueconf_incoming_file_requests_oldest_pending_age_seconds{status="waiting"} 12.5
    trueconf_file_transfer_availability{state="available"} 1                   (every state, one at 1)
    trueconf_room_app_state{state="ready"} 1                                   (every state, one at 1)
    trueconf_room_info{version="5.0.2.17"} 1
    trueconf_room_identity_info{name="Meeting room",peer_id="room@some.server"} 1   (while logged in)

and the Room's transfer counters (room/ledger.py), from its first scrape on, up or down:

    trueconf_outgoing_file_requests_created_total{destination="peer"} 3           (every destination)
    trueconf_outgoing_file_requests_finished_total{destination="peer",status="failed"} 1
    trueconf_outgoing_file_requests_processed_bytes_total{destination="peer"} 6400
    trueconf_incoming_file_requests_created_total{source="peer"} 2                (and so on, by source)

For a Room that did not answer, only `trueconf_up 0`, the duration, `trueconf_scrape_error` and the counters
are exposed: zeros for the request gauges would lie. Likewise the families of an optional method are absent
when it was not asked or failed this scrape (its `trueconf_scrape_method_success` says which).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.build import build_labels
from exporter.collect.collection import INTERNAL_ERROR, Collection, log_internal_error
from exporter.room import Reason
from exporter.room.file_requests import DESTINATIONS, PENDING_STATUSES, SOURCES, STATUSES, Snapshot
from exporter.room.ledger import FINISHED_STATUSES, RoomTransfers, TransferTotals
from exporter.room.picture import APP_STATES, AVAILABILITY_STATES, RoomPicture

PREFIX = "trueconf"
REQUESTS = f"{PREFIX}_outgoing_file_requests"
INCOMING = f"{PREFIX}_incoming_file_requests"


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
                    replace(collection, snapshot=None, picture=None, transfers=None, error=INTERNAL_ERROR),
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
    if collection.snapshot is not None and collection.picture is not None:
        yield from picture_metrics(collection.picture)
    if collection.transfers is not None:
        yield from transfer_metrics(collection.transfers)


def transfer_metrics(transfers: RoomTransfers) -> Iterator[Metric]:
    """The Room's transfer counters, both directions, every label value present (0 until counted)."""
    yield from _transfer_families(REQUESTS, "outgoing", "destination", transfers.outgoing)
    yield from _transfer_families(INCOMING, "incoming", "source", transfers.incoming)


def _transfer_families(name: str, direction: str, side: str, totals: TransferTotals) -> Iterator[Metric]:
    since = "since the exporter began watching the TrueConf Room"
    created = CounterMetricFamily(
        f"{name}_created", f"{direction.capitalize()} file requests first seen {since}.", labels=[side]
    )
    for value in DESTINATIONS:
        created.add_metric([value], totals.created[value])
    yield created
    finished = CounterMetricFamily(
        f"{name}_finished",
        f"{direction.capitalize()} file requests seen reaching status processed or failed {since}.",
        labels=["status", side],
    )
    for status in FINISHED_STATUSES:
        for value in DESTINATIONS:
            finished.add_metric([status, value], totals.finished[(status, value)])
    yield finished
    processed = CounterMetricFamily(
        f"{name}_processed_bytes",
        f"Sizes of the {direction} file requests counted processed {since}.",
        labels=[side],
    )
    for value in DESTINATIONS:
        processed.add_metric([value], totals.processed_bytes[value])
    yield processed


def snapshot_metrics(snapshot: Snapshot, now: float) -> Iterator[Metric]:
    """The request gauges of a Room that answered; every label combination present, zeros included."""
    yield from _request_families(
        REQUESTS,
        "outgoing",
        ("destination", DESTINATIONS),
        snapshot,
        now,
        "Age of the oldest request in this status, computed at scrape time against the exporter's clock; "
        "0 when there is none.",
    )
    created = GaugeMetricFamily(
        f"{REQUESTS}_oldest_pending_timestamp_seconds",
        "Creation time (Unix seconds) of the oldest request in this status; absent when there is none.",
        labels=["status"],
    )
    for status in PENDING_STATUSES:
        created_at = snapshot.oldest_pending_created_at[status]
        if created_at is not None:
            created.add_metric([status], created_at)
    yield created
    yield GaugeMetricFamily(
        f"{REQUESTS}_malformed",
        "Entries of the last reply that had a defect (a missing or non-numeric status, size or timestamp, "
        "or not an object).",
        value=snapshot.malformed,
    )


def picture_metrics(picture: RoomPicture) -> Iterator[Metric]:
    """The families of the optional methods (reference §5), each only when its method answered this scrape,
    and the success of every method asked."""
    success = GaugeMetricFamily(
        f"{PREFIX}_scrape_method_success",
        "1 if the Room answered this API method successfully in this scrape, 0 if it refused it, did not "
        "know it, answered in an unreadable shape or not in time; one series per method asked. Only "
        "getOutgoingFilesRequests decides trueconf_up; another method's families are absent while it fails.",
        labels=["method"],
    )
    for method, succeeded in picture.method_success.items():
        success.add_metric([method], int(succeeded))
    yield success
    if picture.incoming is not None:
        yield from incoming_metrics(picture.incoming, picture.collected_at)
    if picture.availability is not None:
        yield state_set(
            f"{PREFIX}_file_transfer_availability",
            "Whether the Room may transfer files at all (getFileTransferAvailability): 1 for its current "
            "state, 0 for the others. Tells 'no transfers' apart from 'forbidden by the server or the "
            "licence' or 'not logged in to a server'.",
            AVAILABILITY_STATES,
            picture.availability,
        )
    if picture.app_state is not None:
        yield state_set(
            f"{PREFIX}_room_app_state",
            "The Room application's state (getAppState): 1 for the current one, 0 for the others. A Room "
            "without its server or not logged in cannot send or receive files.",
            APP_STATES,
            picture.app_state,
        )
    if picture.version is not None:
        info = GaugeMetricFamily(
            f"{PREFIX}_room_info",
            "A constant 1 labelled by the Room's version (getSystemInfo productInfo, "
            "major.minor.revision.build); getOutgoingFilesRequests needs 4.1 or later.",
            labels=["version"],
        )
        info.add_metric([picture.version], 1)
        yield info
    if picture.identity is not None:
        identity = GaugeMetricFamily(
            f"{PREFIX}_room_identity_info",
            "A constant 1 labelled by the name and TrueConf ID the Room is logged in with (getSystemInfo "
            "authInfo: peerDn, peerId; control characters escaped, each cut to 64 characters); absent until "
            "the Room's session has seen them. Join with "
            "* on(instance) group_left(name) trueconf_room_identity_info.",
            labels=["name", "peer_id"],
        )
        identity.add_metric([picture.identity.name, picture.identity.peer_id], 1)
        yield identity


def incoming_metrics(snapshot: Snapshot, now: float) -> Iterator[Metric]:
    """The incoming request gauges (getIncomingFilesRequests), by the outgoing rules: every label pair
    present, zeros included; the age is 0 when there is none and never negative."""
    yield from _request_families(
        INCOMING,
        "incoming",
        ("source", SOURCES),
        snapshot,
        now,
        "Age of the oldest incoming request in this status (waiting for this Room's answer, or downloading), "
        "computed at scrape time against the exporter's clock; 0 when there is none.",
    )


def _request_families(
    name: str,
    direction: str,
    party: tuple[str, tuple[str, ...]],
    snapshot: Snapshot,
    now: float,
    age_help: str,
) -> Iterator[Metric]:
    """Counts and sizes by status and the other party (every pair present, zeros included), and the age of
    the oldest pending request by status: one rule for the outgoing and the incoming lists."""
    label, parties = party
    counts = GaugeMetricFamily(
        name,
        f"{direction.capitalize()} file requests the Room lists, by status and {label} "
        "(a peer or a group conference).",
        labels=["status", label],
    )
    sizes = GaugeMetricFamily(
        f"{name}_size_bytes",
        f"Sum of the sizes of the {direction} file requests, by status and {label}.",
        labels=["status", label],
    )
    for status in STATUSES:
        for other in parties:
            counts.add_metric([status, other], snapshot.counts[(status, other)])
            sizes.add_metric([status, other], snapshot.size_bytes[(status, other)])
    ages = GaugeMetricFamily(f"{name}_oldest_pending_age_seconds", age_help, labels=["status"])
    for status in PENDING_STATUSES:
        ages.add_metric([status], snapshot.oldest_pending_age(status, now))
    yield counts
    yield sizes
    yield ages


def state_set(name: str, documentation: str, states: tuple[str, ...], current: str) -> GaugeMetricFamily:
    """A gauge with one series per state, the current one at 1 and every other at 0."""
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    for state in states:
        family.add_metric([state], int(state == current))
    return family

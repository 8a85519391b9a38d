"""What one scrape asks of one Room: hashable (it keys shared collections) and never showing its PIN."""

from __future__ import annotations

from exporter.room import RoomRequest, parse_target


def test_a_room_request_shows_no_pin_and_equal_requests_share_a_collection():
    """The request is the collection's key (scrapes of equal requests at once share one) and may be printed
    in a log line or a traceback: its repr never carries the PIN."""
    target = parse_target("ws://127.0.0.1:8765")
    request = RoomRequest(target, "8642-secret")
    assert "8642-secret" not in repr(request) and "8642-secret" not in str(request)
    assert request == RoomRequest(target, "8642-secret") and hash(request) == hash(
        RoomRequest(target, "8642-secret")
    )
    assert request != RoomRequest(target, "other") and request != RoomRequest(
        target, "8642-secret", keep_session=False
    )

"""Per-entry parsing figures: a 10 000-entry `getOutgoingFilesRequests` reply, decoded and parsed in-process.

Prints the median and the best of many runs in milliseconds, for the JSON decode alone (C speed, the floor)
and for the parse of the decoded reply into a snapshot (the exporter's per-entry Python work). Measures,
never asserts. The reply mixes the documentation's two entry shapes (a peer and a group conference) over
every status, with timestamps in seconds, as a busy Room would list them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from timing import measure  # beside this script: benchmarks/ is the script's first path entry

from exporter.methods import OUTGOING_METHOD
from exporter.room.file_requests import parse_outgoing_reply
from exporter.room.picture import parse_room


def entry(n: int, timestamp_scale: int = 1) -> dict[str, Any]:
    common = {
        "fileRequestId": f"0d99602a-82a7-4aea-9a1d-{n:012d}",
        "fileName": f"file-{n}.jpg",
        "status": n % 4,
        "size": 3200 + n,
        "timestamp": (1659251271 + n) * timestamp_scale,
        "fileId": 346234218 + n,
    }
    if n % 3 == 0:
        return {**common, "confId": "000001703e81e38e@some.server#vcs"}
    return {**common, "peerId": f"820_{n}@some.server", "peerDn": f"820_{n}"}


def reply_text(entries: int) -> str:
    return json.dumps(
        {
            "method": "getOutgoingFilesRequests",
            "requestId": "1",
            "result": True,
            "outgoingFilesRequests": [entry(n) for n in range(entries)],
        }
    )


def report(name: str, durations: list[float], entries: int) -> float:
    median = statistics.median(durations)
    print(
        f"{name:<28} n={len(durations):<4} median={median * 1000:7.2f} ms  "
        f"best={min(durations) * 1000:7.2f} ms  per entry={median / entries * 1e6:5.2f} us"
    )
    return min(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    text = reply_text(args.entries)
    reply = json.loads(text)
    print(f"{args.entries} entries, {len(text) / 1024:.0f} KiB of JSON")
    report("json.loads", measure(lambda: json.loads(text), args.runs), args.entries)
    report("parse outgoing", measure(lambda: parse_outgoing_reply(reply), args.runs), args.entries)
    asked = (OUTGOING_METHOD,)
    report(
        "parse_room (outgoing only)",
        measure(lambda: parse_room({OUTGOING_METHOD: reply}, asked, time.time()), args.runs),
        args.entries,
    )


if __name__ == "__main__":
    main()

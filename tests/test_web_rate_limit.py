"""The web config's `rate_limit` and the toolkit's header values.

`rate_limit` is golang.org/x/time/rate's token bucket as the exporter-toolkit applies it: `burst` requests at
once, one more every `interval`, over every request and path before basic auth, `429` past it. The unit tests
drive the bucket and the middleware with a stand-in clock; the process tests run a real `serve`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from exporter.web.auth import WebSecurity
from exporter.web.config import RateLimit, WebConfigError, WebConfigWatcher, load_web_config
from exporter.web.responses import StartResponse
from exporter.web.server import RateLimited, TokenBucket
from tests.processes import http_get
from tests.test_cli import run

PASSWORD = "correct horse battery staple"
FAST_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
POLL_SECONDS = 0.02
POLL_LIMIT_SECONDS = 5.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "web.yml"
    config.write_text(text)
    return config


# ---- the bucket ----


def test_the_bucket_lets_a_burst_through_then_one_per_interval():
    bucket = TokenBucket(RateLimit(interval_seconds=1.0, burst=3), now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(1.0)  # refused: the next token is a whole interval away
    assert bucket.take(0.6) == pytest.approx(0.4)  # a refusal takes nothing
    assert bucket.take(1.0) == 0.0
    assert bucket.take(1.0) > 0


def test_a_long_pause_refills_the_bucket_to_its_burst_and_no_further():
    bucket = TokenBucket(RateLimit(interval_seconds=0.5, burst=2), now=0.0)
    assert bucket.take(0.0) == bucket.take(0.0) == 0.0
    answers = [bucket.take(3600.0) for _ in range(3)]
    assert answers[:2] == [0.0, 0.0] and answers[2] > 0


# ---- the format ----


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rate_limit:\n  interval: 1s\n  burst: 3\n", RateLimit(1.0, 3)),
        ("rate_limit:\n  interval: 500ms\n  burst: 1\n", RateLimit(0.5, 1)),
        ("rate_limit:\n  interval: 1m30s\n  burst: 10\n", RateLimit(90.0, 10)),
        ("rate_limit:\n  interval: 1.5h\n  burst: 2\n", RateLimit(5400.0, 2)),
        ("rate_limit:\n  interval: 0\n  burst: 3\n", None),  # the toolkit's documented "off"
        ("rate_limit:\n  interval: 0s\n", None),
        ("rate_limit: {}\n", None),
        ("rate_limit:\n", None),
        ("basic_auth_users: {}\n", None),
    ],
)
def test_rate_limit_is_read_as_the_toolkit_reads_it(tmp_path, text, expected):
    assert load_web_config(write(tmp_path, text)).rate_limit == expected


BAD_RATE_LIMITS = [
    ("rate_limit: 10\n", "rate_limit: must be a mapping"),
    ("rate_limit:\n  interval: 1s\n  burst: 3\n  per_ip: true\n", "rate_limit.per_ip: unknown key"),
    ("rate_limit:\n  burst: 3\n", "rate_limit.interval: missing"),
    ("rate_limit:\n  interval: 1s\n", "rate_limit.burst: missing"),
    ("rate_limit:\n  interval: 1s\n  burst: 0\n", "rate_limit.burst: must be a whole number of 1 or more"),
    ("rate_limit:\n  interval: 1s\n  burst: -2\n", "rate_limit.burst: must be a whole number of 1 or more"),
    ("rate_limit:\n  interval: 1s\n  burst: 2.5\n", "rate_limit.burst: must be a whole number"),
    ("rate_limit:\n  interval: 1s\n  burst: true\n", "rate_limit.burst: must be a whole number"),
    ("rate_limit:\n  interval: 1d\n  burst: 3\n", "rate_limit.interval: must be a duration"),
    ("rate_limit:\n  interval: soon\n  burst: 3\n", "rate_limit.interval: must be a duration"),
    ("rate_limit:\n  interval: 5\n  burst: 3\n", "rate_limit.interval: needs a unit"),
    ("rate_limit:\n  interval: -1s\n  burst: 3\n", "rate_limit.interval: must not be negative"),
    ("rate_limit:\n  interval: [1s]\n  burst: 3\n", "rate_limit.interval: must be a duration"),
]

BAD_HEADERS = [
    (
        "http_server_config:\n  headers:\n    X-Frame-Options: allow-from x\n",
        "http_server_config.headers.X-Frame-Options: must be deny or sameorigin",
    ),
    (
        "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
        "http_server_config.headers.X-Content-Type-Options: must be nosniff",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_RATE_LIMITS + BAD_HEADERS)
def test_bad_values_are_named_with_file_and_key_in_one_line(tmp_path, text, message):
    config = write(tmp_path, text)
    with pytest.raises(WebConfigError) as caught:
        load_web_config(config)
    assert str(caught.value).startswith(f"{config}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", ["deny", "sameorigin"])
def test_x_frame_options_takes_deny_or_sameorigin(tmp_path, value):
    loaded = load_web_config(
        write(tmp_path, f"http_server_config:\n  headers:\n    X-Frame-Options: {value}\n")
    )
    assert loaded.headers == (("X-Frame-Options", value),)


@pytest.mark.parametrize("value", ["DENY", "SameOrigin", "allow-from x"])
def test_x_frame_options_refuses_what_the_toolkit_refuses(tmp_path, value):
    """The toolkit compares the value exactly: `DENY` fails a Go exporter's start, and here too."""
    with pytest.raises(WebConfigError) as caught:
        load_web_config(write(tmp_path, f"http_server_config:\n  headers:\n    X-Frame-Options: {value}\n"))
    assert "X-Frame-Options" in str(caught.value)


# ---- the middleware, in this process ----


class Recorder:
    """The app behind the limit: counts the requests that reach it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        self.paths.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]


def call(app: Any, path: str = "/metrics") -> tuple[str, dict[str, str]]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> None:
        answer.update(status=status, headers=dict(headers))

    b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET", "REMOTE_ADDR": "127.0.0.1"}, start_response))
    return answer["status"], answer["headers"]


def test_the_limit_covers_every_path_before_basic_auth(tmp_path):
    config = write(
        tmp_path,
        f"basic_auth_users:\n  prometheus: {FAST_HASH}\nhealthz_without_auth: true\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        "rate_limit:\n  interval: 1s\n  burst: 3\n",
    )
    clock, inner = Clock(), Recorder()
    watcher = WebConfigWatcher(config)
    app = RateLimited(WebSecurity(inner, watcher), watcher, clock)
    # Requests without a password still take a token: the limit comes first, as in the toolkit.
    assert [call(app, path)[0][:3] for path in ("/metrics", "/", "/healthz")] == ["401", "401", "200"]
    status, headers = call(app, "/healthz")
    assert status == "429 Too Many Requests"
    assert headers["Retry-After"] == "1" and headers["X-Frame-Options"] == "deny"
    assert inner.paths == ["/healthz"]
    clock.now += 1.0
    assert call(app, "/healthz")[0] == "200 OK"
    assert call(app, "/healthz")[0] == "429 Too Many Requests"


def test_an_edit_of_the_file_applies_the_new_limit(tmp_path):
    config = write(tmp_path, "rate_limit:\n  interval: 1h\n  burst: 1\n")
    clock, inner = Clock(), Recorder()
    watcher = WebConfigWatcher(config)
    app = RateLimited(WebSecurity(inner, watcher), watcher, clock)
    assert [call(app)[0][:3] for _ in range(2)] == ["200", "429"]
    assert call(app)[1]["Retry-After"] == "3600"

    config.write_text("rate_limit:\n  interval: 1h\n  burst: 3\n")  # a new limit starts a full bucket
    assert [call(app)[0][:3] for _ in range(4)] == ["200", "200", "200", "429"]

    config.write_text("rate_limit: [\n")  # broken: the next layer fails closed (500), not the limit
    assert call(app)[0].startswith("500")

    config.write_text("rate_limit:\n  interval: 0\n")  # off
    assert {call(app)[0][:3] for _ in range(20)} == {"200"}


# ---- a real serve ----


def serve(processes, config: Path) -> str:
    exporter = processes["exporter"]("--target", "ws://127.0.0.1:1", "--web.config.file", str(config))
    return f"http://127.0.0.1:{exporter.ports['http']}"


def status_of(url: str) -> int:
    return http_get(url, timeout=10)[0]


def test_a_real_serve_answers_the_burst_then_429_then_one_per_interval(processes, tmp_path):
    config = write(tmp_path, "rate_limit:\n  interval: 1s\n  burst: 3\n")
    base = serve(processes, config)
    started = time.monotonic()
    assert [status_of(f"{base}{path}") for path in ("/metrics", "/", "/healthz")] == [200, 200, 200]
    status, headers, body = http_get(f"{base}/healthz", timeout=10)
    assert status == 429 and headers["Retry-After"] == "1" and b"rate_limit" in body

    deadline = started + POLL_LIMIT_SECONDS
    while (status := status_of(f"{base}/metrics")) == 429 and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)  # a refused request takes no token, so polling does not delay the next
    refilled = time.monotonic() - started
    assert status == 200
    assert 0.99 <= refilled < POLL_LIMIT_SECONDS, refilled  # one token, one interval after the first request
    assert status_of(f"{base}/healthz") == 429  # and only one

    config.write_text("rate_limit:\n  interval: 1h\n  burst: 5\n")  # re-read on change: a new, full bucket
    assert [status_of(f"{base}/healthz") for _ in range(6)] == [200] * 5 + [429]


@pytest.mark.process
@pytest.mark.parametrize(
    ("text", "message"),
    [BAD_RATE_LIMITS[4], BAD_RATE_LIMITS[8], BAD_RATE_LIMITS[11], BAD_HEADERS[0]],
)
def test_serve_refuses_a_bad_value_at_start_with_exit_2_and_one_line(tmp_path, text, message):
    config = write(tmp_path, text)
    result = run("serve", "--web.listen-address", "127.0.0.1:0", "--web.config.file", str(config), timeout=20)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: invalid --web.config.file: {config}: ") and message in lines[0]

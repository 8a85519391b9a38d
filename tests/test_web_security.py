"""`--web.config.file` against a real `serve` process.

TLS with certificates made at test time, client certificates, basic auth, re-reading the file when it
changes, and start-up failures with a clear message.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import bcrypt
import pytest
import trustme

from exporter.web.config import RateLimit, WebConfigError, load_web_config
from tests.exposition import value
from tests.processes import http_get
from tests.test_cli import run

pytestmark = pytest.mark.process

PASSWORD = "correct horse battery staple"
FAST_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
"""Cost 4 keeps the tests quick; the timing test makes its own cost-12 hash."""


class Certs:
    """A server CA and certificate, and a separate CA for client certificates, written as PEM files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.server_ca = trustme.CA()
        self.client_ca = trustme.CA()
        server = self.server_ca.issue_cert("127.0.0.1", "localhost")
        server.cert_chain_pems[0].write_to_path(folder / "server.crt")
        server.private_key_pem.write_to_path(folder / "server.key")
        self.client_ca.cert_pem.write_to_path(folder / "clients-ca.crt")
        self.client = self.client_ca.issue_cert("prometheus@example.org")
        self.stranger = trustme.CA().issue_cert("stranger@example.org")

    def context(self, client: trustme.LeafCert | None = None, **options: object) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.server_ca.configure_trust(context)
        if client is not None:
            client.configure_cert(context)
        for name, option in options.items():
            setattr(context, name, option)
        return context


@pytest.fixture
def certs(tmp_path) -> Certs:
    return Certs(tmp_path)


def https_get(
    url: str, context: ssl.SSLContext, headers: dict[str, str] | None = None
) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def serve(processes, web_config: Path, room_port: int | None = None, *extra: str):
    target = f"ws://127.0.0.1:{room_port}" if room_port else "ws://127.0.0.1:1"
    return processes["exporter"](
        "--target", target, "--web.config.file", str(web_config), "--log.level", "debug", *extra
    )


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


def test_a_tls_scrape_works_and_plain_http_is_refused(processes, room, certs, tmp_path):
    config = tmp_path / "web.yml"
    config.write_text(TLS)
    exporter = serve(processes, config, room("doc-example").ports.websocket)
    port = exporter.ports["http"]
    assert f"url=https://127.0.0.1:{port}/metrics" in exporter.stderr
    status, _, body = https_get(f"https://127.0.0.1:{port}/metrics", certs.context())
    assert status == 200 and value(body.decode(), "trueconf_up") == 1

    status, _, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 400 and b"HTTP request to an HTTPS server" in body
    assert b"trueconf" not in body
    with pytest.raises(urllib.error.URLError) as caught:  # the client notices a server it does not trust
        https_get(f"https://127.0.0.1:{port}/metrics", ssl.create_default_context())
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)
    assert exporter.alive()
    assert "Traceback" not in exporter.stderr


def test_tls_below_the_minimum_version_is_refused(processes, certs, tmp_path):
    config = tmp_path / "web.yml"
    config.write_text(TLS + "  min_version: TLS13\n")
    port = serve(processes, config).ports["http"]
    old = certs.context(maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)) as caught:
        https_get(f"https://127.0.0.1:{port}/healthz", old)
    assert "PROTOCOL_VERSION" in str(caught.value)
    assert https_get(f"https://127.0.0.1:{port}/healthz", certs.context())[0] == 200


def test_a_client_certificate_is_required_when_configured(processes, certs, tmp_path):
    config = tmp_path / "web.yml"
    config.write_text(
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients-ca.crt\n"
    )
    port = serve(processes, config).ports["http"]
    url = f"https://127.0.0.1:{port}/healthz"
    assert https_get(url, certs.context(certs.client))[0] == 200
    for client in (None, certs.stranger):  # none at all, or one from a CA the exporter does not trust
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            https_get(url, certs.context(client))


def test_basic_auth_over_tls(processes, room, certs, tmp_path):
    config = tmp_path / "web.yml"
    config.write_text(TLS + f"basic_auth_users:\n  prometheus: {FAST_HASH}\n")
    port = serve(processes, config, room("doc-example").ports.websocket).ports["http"]
    url = f"https://127.0.0.1:{port}/metrics"
    status, _, body = https_get(url, certs.context(), basic("prometheus", PASSWORD))
    assert status == 200 and value(body.decode(), "trueconf_up") == 1
    for headers in (
        {},
        basic("prometheus", "wrong"),
        basic("grafana", PASSWORD),
        {"Authorization": "Bearer x"},
    ):
        status, answer_headers, body = https_get(url, certs.context(), headers)
        assert status == 401
        assert answer_headers["WWW-Authenticate"].startswith('Basic realm="trueconf-exporter"')
        assert b"trueconf_up" not in body


def test_healthz_is_protected_unless_the_config_opens_it(processes, tmp_path):
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  prometheus: {FAST_HASH}\n")
    base = f"http://127.0.0.1:{serve(processes, config).ports['http']}"
    assert http_get(f"{base}/healthz")[0] == 401
    assert http_get(f"{base}/")[0] == 401
    config.write_text(f"basic_auth_users:\n  prometheus: {FAST_HASH}\nhealthz_without_auth: true\n")
    assert http_get(f"{base}/healthz")[0] == 200  # re-read without a restart
    assert http_get(f"{base}/metrics")[0] == 401
    assert http_get(f"{base}/metrics", basic("prometheus", PASSWORD))[0] == 200


def test_the_web_config_is_re_read_when_it_changes_and_fails_closed_while_broken(processes, tmp_path):
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  prometheus: {FAST_HASH}\n")
    exporter = serve(processes, config)
    url = f"http://127.0.0.1:{exporter.ports['http']}/metrics"
    assert http_get(url, basic("prometheus", PASSWORD))[0] == 200

    new_hash = bcrypt.hashpw(b"rotated", bcrypt.gensalt(rounds=4)).decode()
    config.write_text(f"basic_auth_users:\n  prometheus: {new_hash}\n")
    assert http_get(url, basic("prometheus", PASSWORD))[0] == 401
    assert http_get(url, basic("prometheus", "rotated"))[0] == 200

    config.write_text(f"basic_auth_users:\n  prometheus: {new_hash}\nbasic_auth_user: {{}}\n")
    status, _, body = http_get(url, basic("prometheus", "rotated"))
    assert status == 500 and b"web config file is invalid" in body
    assert "basic_auth_user: unknown key" in exporter.stderr

    config.write_text(f"basic_auth_users:\n  prometheus: {new_hash}\n")
    assert http_get(url, basic("prometheus", "rotated"))[0] == 200


def test_certificates_are_re_read_when_they_change(processes, certs, tmp_path):
    config = tmp_path / "web.yml"
    config.write_text(TLS)
    url = f"https://127.0.0.1:{serve(processes, config).ports['http']}/healthz"
    assert https_get(url, certs.context())[0] == 200
    renewed_ca = trustme.CA()
    renewed = renewed_ca.issue_cert("127.0.0.1")
    renewed.cert_chain_pems[0].write_to_path(tmp_path / "server.crt")
    renewed.private_key_pem.write_to_path(tmp_path / "server.key")
    context = ssl.create_default_context()
    renewed_ca.configure_trust(context)
    assert https_get(url, context)[0] == 200
    with pytest.raises(urllib.error.URLError) as caught:  # the old certificate is gone
        https_get(url, certs.context())
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)


def write_certs_and(tmp_path: Path, text: str) -> Path:
    Certs(tmp_path)
    (tmp_path / "not-a-cert.pem").write_text("hello\n")
    config = tmp_path / "web.yml"
    config.write_text(text)
    return config


BAD_WEB_CONFIGS = [
    ("tls_server_config:\n  cert_file: server.crt\n", "tls_server_config.key_file: missing"),
    (TLS + "  min_versoin: TLS12\n", "tls_server_config.min_versoin: unknown key"),
    (TLS + "  min_version: SSL3\n", "tls_server_config.min_version: unknown TLS version 'SSL3'"),
    (TLS + "  client_auth_type: RequireAndVerifyClientCert\n", "tls_server_config.client_ca_file: missing"),
    (TLS + "  client_auth_type: RequireAnyClientCert\n  client_ca_file: clients-ca.crt\n", "not supported"),
    (TLS + "  client_auth_type: Sometimes\n", "unknown value 'Sometimes'"),
    (TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "cipher_suites: is an exporter-toolkit key"),
    ("tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n", "nope.crt does not exist"),
    ("tls_server_config:\n  cert_file: not-a-cert.pem\n  key_file: server.key\n", "cert_file: cannot load"),
    ("basic_auth_users:\n  prometheus: hunter2\n", "basic_auth_users.prometheus: is not a bcrypt hash"),
    ("basic_auth_users: [prometheus]\n", "basic_auth_users: must be a mapping"),
    ("basic_auth_user:\n  prometheus: x\n", "basic_auth_user: unknown key"),
    (
        "http_server_config:\n  headers:\n    Server: nginx\n",
        "http_server_config.headers.Server: not settable",
    ),
    ("healthz_without_auth: sometimes\n", "healthz_without_auth: must be true or false"),
    ("tls_server_config: [\n", "not valid YAML"),
    (
        "http_server_config:\n  headers:\n    X-Frame-Options: allow-from x\n",
        "http_server_config.headers.X-Frame-Options: must be deny or sameorigin",
    ),
    ("rate_limit:\n  interval: 1s\n  burst: 0\n", "rate_limit.burst: must be a whole number of 1 or more"),
]


@pytest.mark.parametrize(("text", "message"), BAD_WEB_CONFIGS)
def test_bad_web_configs_are_named_with_file_key_and_problem(tmp_path, text, message):
    config = write_certs_and(tmp_path, text)
    with pytest.raises(WebConfigError) as caught:
        load_web_config(config)
    assert str(caught.value).startswith(f"{config}: ") and message in str(caught.value)


@pytest.mark.parametrize(("text", "message"), [BAD_WEB_CONFIGS[0], BAD_WEB_CONFIGS[2], BAD_WEB_CONFIGS[9]])
def test_serve_refuses_to_start_with_a_bad_web_config(tmp_path, text, message):
    config = write_certs_and(tmp_path, text)
    result = run("serve", "--web.listen-address", "127.0.0.1:0", "--web.config.file", str(config), timeout=20)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"invalid --web.config.file: {config}: " in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_web_config_file_is_a_start_up_error(tmp_path):
    result = run("serve", "--web.config.file", str(tmp_path / "web.yml"), timeout=20)
    assert result.returncode == 2 and "no such file" in result.stderr and "Traceback" not in result.stderr


def test_a_full_toolkit_style_config_is_accepted(tmp_path):
    config = write_certs_and(
        tmp_path,
        TLS + "  client_auth_type: VerifyClientCertIfGiven\n"
        "  client_ca_file: clients-ca.crt\n  min_version: TLS12\n  max_version: TLS13\n"
        "http_server_config:\n  http2: true\n  headers:\n"
        "    Strict-Transport-Security: max-age=31536000\n    X-Frame-Options: sameorigin\n"
        f"basic_auth_users:\n  prometheus: {FAST_HASH}\n"
        "rate_limit:\n  interval: 100ms\n  burst: 20\n",
    )
    loaded = load_web_config(config)
    assert loaded.context is not None and loaded.context.verify_mode is ssl.CERT_OPTIONAL
    assert loaded.headers == (
        ("Strict-Transport-Security", "max-age=31536000"),
        ("X-Frame-Options", "sameorigin"),
    )
    assert loaded.rate_limit == RateLimit(0.1, 20)


def test_configured_headers_are_sent(processes, tmp_path):
    config = tmp_path / "web.yml"
    config.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    status, headers, _ = http_get(f"http://127.0.0.1:{serve(processes, config).ports['http']}/healthz")
    assert status == 200 and headers["X-Frame-Options"] == "deny"


def test_the_example_web_config_is_valid(tmp_path):
    example = Path(__file__).parent.parent / "examples" / "web-config.yml"
    certs = Certs(tmp_path)
    (tmp_path / "tls").mkdir()
    for name in ("server.crt", "server.key"):
        (tmp_path / name).rename(tmp_path / "tls" / name)
    certs.client_ca.cert_pem.write_to_path(tmp_path / "tls" / "prometheus-clients-ca.crt")
    copy = tmp_path / "web-config.yml"
    copy.write_text(example.read_text())
    loaded = load_web_config(copy)
    assert loaded.context is not None and loaded.context.verify_mode is ssl.CERT_REQUIRED
    assert bcrypt.checkpw(b"change-me", loaded.basic_auth_users["prometheus"])
    assert loaded.healthz_without_auth


def test_probe_and_reload_need_the_password_too(processes, room, tmp_path):
    (tmp_path / "config.yml").write_text("modules:\n  default: {}\nallowed_targets: [127.0.0.1]\n")
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  prometheus: {FAST_HASH}\n")
    exporter = processes["exporter"](
        "--config.file", str(tmp_path / "config.yml"), "--web.config.file", str(tmp_path / "web.yml")
    )
    base = f"http://127.0.0.1:{exporter.ports['http']}"
    probe = f"{base}/probe?target=127.0.0.1:{room('doc-example').ports.websocket}"
    assert http_get(probe)[0] == 401
    status, _, body = http_get(probe, basic("prometheus", PASSWORD))
    assert status == 200 and value(body.decode(), "trueconf_up") == 1
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(urllib.request.Request(f"{base}/-/reload", data=b"", method="POST"), timeout=10)
    assert caught.value.code == 401
    request = urllib.request.Request(
        f"{base}/-/reload", data=b"", method="POST", headers=basic("prometheus", PASSWORD)
    )
    with opener.open(request, timeout=10) as response:
        assert response.status == 200

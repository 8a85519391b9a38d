"""Packaging: the Dockerfile, the Kubernetes manifests and the systemd unit, checked with no container engine.

Every tool used here is installed by `make test` (hadolint from the test extras, systemd-analyze by `make
system-deps`), so a missing tool fails these tests instead of skipping them. The image itself is built and run
by `scripts/container-smoke.sh` (podman; not in CI).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import __version__
from exporter.cli.options import DEFAULT_LISTEN_ADDRESS
from exporter.cli.serve import serve
from exporter.fleet.config import parse_config
from tests.processes import start_exporter
from tests.test_config import probe_allowed

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES = ROOT / "deploy" / "kubernetes"
UNIT = ROOT / "contrib" / "systemd" / "trueconf-exporter.service"
UNIT_ENV = ROOT / "contrib" / "systemd" / "trueconf-exporter.env"
DEFAULT_PORT = int(DEFAULT_LISTEN_ADDRESS.rpartition(":")[2])
SERVE_ENV_VARS = {param.envvar for param in serve.params if isinstance(param.envvar, str)}
PLACEHOLDER = re.compile(r"change[-_ ]?me|example|placeholder|<[^>]+>", re.IGNORECASE)


def tool(name: str) -> str:
    """A tool from the virtual environment or PATH; missing is a failure (make test installs them all)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: run `make test` (it installs every tool these tests use)"
    return found


# ---------------------------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends in a line continuation"
    return instructions


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (index 0: those before the first FROM)."""
    result: list[list[tuple[str, str]]] = [[]]
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, rest))
    return result


def final_stage() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for keyword, rest in stages()[-1]:
        found[keyword].append(rest)
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_stages_from_a_pinned_base_image_argument() -> None:
    preamble, *build_stages = stages()
    assert len(build_stages) == 2, "a builder stage and a final stage"
    base_args = [rest for keyword, rest in preamble if keyword == "ARG" and rest.startswith("BASE_IMAGE=")]
    assert base_args, "ARG BASE_IMAGE=<image> before the first FROM"
    default = base_args[0].split("=", 1)[1]
    # Pinned: an exact version tag (x.y.z) or a digest, never a floating tag such as latest or 3.
    assert re.search(r"@sha256:[0-9a-f]{64}$|:\d+\.\d+\.\d+[-\w.]*$", default), default
    builder_from, final_from = build_stages[0][0][1], build_stages[1][0][1]
    assert re.fullmatch(r"\$\{BASE_IMAGE\} AS builder", builder_from, re.IGNORECASE)
    assert final_from == "${BASE_IMAGE}"


def test_final_stage_has_no_build_tools_and_copies_the_builders_environment() -> None:
    final = final_stage()
    assert any(rest.startswith("--from=builder ") for rest in final["COPY"]), "COPY --from=builder"
    assert all(not rest.startswith("--from") or rest.startswith("--from=builder ") for rest in final["COPY"])
    for command in final["RUN"]:
        assert not re.search(r"\b(apt-get|apt|pip3?|gcc|make|curl|wget)\b", command), command
    builder = "\n".join(rest for keyword, rest in stages()[1] if keyword == "RUN")
    assert "pip uninstall" in builder and "pip" in builder, (
        "pip is removed from the copied virtual environment"
    )


def test_runs_as_a_numeric_unprivileged_user() -> None:
    users = final_stage()["USER"]
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]


def test_port_entrypoint_and_command() -> None:
    final = final_stage()
    assert final["EXPOSE"] == [str(DEFAULT_PORT)]
    entrypoint = json.loads(final["ENTRYPOINT"][-1])
    assert (
        isinstance(entrypoint, list) and len(entrypoint) == 1 and entrypoint[0].endswith("/trueconf-exporter")
    )
    assert json.loads(final["CMD"][-1]) == ["serve"]


def test_oci_labels() -> None:
    labels = " ".join(final_stage()["LABEL"])
    for name in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert f"org.opencontainers.image.{name}=" in labels, name
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert f"VERSION={__version__}" in final_stage()["ARG"], "the image's default version is the package's"


def healthcheck_command() -> list[str]:
    healthchecks = final_stage()["HEALTHCHECK"]
    assert len(healthchecks) == 1
    _, _, exec_form = healthchecks[0].partition("CMD ")
    command = json.loads(exec_form)
    assert isinstance(command, list), "exec form: no shell needed"
    return command


def test_healthcheck_uses_only_python_and_hits_healthz() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python3", "-c"]
    assert "/healthz" in command[2]
    assert not re.search(r"\b(curl|wget|requests)\b", command[2])


def test_healthcheck_passes_against_a_live_exporter_and_fails_without_one(tmp_path: Path) -> None:
    """The HEALTHCHECK's own code, run as the image runs it: healthy if /healthz answers, unhealthy if not."""
    code = healthcheck_command()[2]
    exporter = start_exporter(tmp_path)
    try:
        port = exporter.ports["http"]
        for address in (f"127.0.0.1:{port}", f":{port}", f"0.0.0.0:{port}"):
            result = subprocess.run(
                [sys.executable, "-c", code],
                env={"TRUECONF_EXPORTER_WEB_LISTEN_ADDRESS": address},
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert result.returncode == 0, (address, result.stderr)
    finally:
        exporter.stop()
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"TRUECONF_EXPORTER_WEB_LISTEN_ADDRESS": f":{port}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0


def test_dockerignore_sends_only_the_package() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "exclude everything, then allow what the build needs"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert {"pyproject.toml", "exporter"} <= allowed
    assert not allowed & {".venv", ".git", "tests", "deploy", "contrib"}


# ---------------------------------------------------------------------------------------------- Kubernetes


def manifests() -> dict[str, list[dict[str, Any]]]:
    """Every YAML document under deploy/kubernetes, by kind."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(KUBERNETES.glob("*.y*ml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is None:
                continue
            assert isinstance(document, dict), path
            assert document.get("apiVersion") and document.get("kind"), path
            found[document["kind"]].append({**document, "__file__": path.name})
    return found


def one(kind: str) -> dict[str, Any]:
    documents = manifests()[kind]
    assert len(documents) == 1, f"exactly one {kind}"
    return documents[0]


def exporter_container() -> dict[str, Any]:
    containers = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_every_manifest_parses_and_is_named() -> None:
    found = manifests()
    assert {"Deployment", "Service", "Secret", "ServiceMonitor", "Probe", "Kustomization"} <= set(found)
    for documents in found.values():
        for document in documents:
            if document["kind"] != "Kustomization":
                assert document["metadata"]["name"], document["__file__"]


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = one("Kustomization")
    secret_example = one("Secret")["__file__"]
    files = {path.name for path in KUBERNETES.glob("*.y*ml")} - {kustomization["__file__"]}
    assert set(kustomization["resources"]) == files - {secret_example}, "it would overwrite the real PINs"


def test_deployment_is_locked_down() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    container = exporter_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod.get("automountServiceAccountToken") is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert not security.get("capabilities", {}).get("add")
    assert not security.get("privileged")


def test_deployment_runs_as_the_images_user() -> None:
    uid = int(final_stage()["USER"][-1].partition(":")[0])
    assert one("Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


def test_deployment_has_requests_and_limits() -> None:
    resources = exporter_container()["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) >= {"cpu", "memory"}, bound


def test_liveness_and_readiness_on_healthz() -> None:
    container = exporter_container()
    port_names = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/healthz", probe
        assert check["port"] in port_names or check["port"] in port_names.values(), probe


def test_container_port_is_the_exporters() -> None:
    container = exporter_container()
    assert [port["containerPort"] for port in container["ports"]] == [DEFAULT_PORT]
    listen = {item["name"]: item.get("value") for item in container["env"]}.get(
        "TRUECONF_EXPORTER_WEB_LISTEN_ADDRESS"
    )
    assert listen is None or listen.rpartition(":")[2] == str(DEFAULT_PORT)


def test_every_setting_named_in_the_packaging_exists() -> None:
    """Every TRUECONF_EXPORTER_* variable in the manifests, unit, image and comments is a `serve` option."""
    files = [DOCKERFILE, UNIT, UNIT_ENV, *KUBERNETES.glob("*.y*ml")]
    for path in files:
        named = set(re.findall(r"TRUECONF_EXPORTER_[A-Z_]+", path.read_text()))
        assert named <= SERVE_ENV_VARS, (path.name, named - SERVE_ENV_VARS)


def test_deployment_uses_only_real_settings_and_no_pin_in_plain_sight() -> None:
    container = exporter_container()
    names = [item["name"] for item in container["env"]]
    assert set(names) <= SERVE_ENV_VARS, set(names) - SERVE_ENV_VARS
    assert "TRUECONF_EXPORTER_PIN" not in names, "the PIN comes from a mounted file"
    assert container["args"][0] == "serve"
    assert not any("--pin" in arg and "--pin-file" not in arg for arg in container["args"])


def mounted(kind: str) -> tuple[dict[str, Any], str]:
    """The one ConfigMap or Secret of the set and the directory the exporter container mounts it at."""
    document = one(kind)
    source, key = {"ConfigMap": ("configMap", "name"), "Secret": ("secret", "secretName")}[kind]
    volumes = one("Deployment")["spec"]["template"]["spec"]["volumes"]
    names = {
        volume["name"]
        for volume in volumes
        if volume.get(source, {}).get(key) == document["metadata"]["name"]
    }
    mounts = [mount for mount in exporter_container()["volumeMounts"] if mount["name"] in names]
    assert len(mounts) == 1, f"the {kind} is mounted once"
    assert mounts[0]["readOnly"] is True
    assert "subPath" not in mounts[0], "a subPath mount never sees updates"
    return document, mounts[0]["mountPath"].rstrip("/")


def exporter_config(tmp_path: Path) -> Any:
    """The ConfigMap's config file, validated by the exporter's own loader, with the Secret's PIN files."""
    configmap, config_dir = mounted("ConfigMap")
    secret, pin_dir = mounted("Secret")
    env = {item["name"]: item.get("value") for item in exporter_container()["env"]}
    directory, _, name = env["TRUECONF_EXPORTER_CONFIG_FILE"].rpartition("/")
    assert directory == config_dir and name in configmap["data"], (
        "TRUECONF_EXPORTER_CONFIG_FILE is the ConfigMap's"
    )
    for key, value in secret["stringData"].items():
        (tmp_path / key).write_text(value)
    document = yaml.safe_load(configmap["data"][name])
    for module_name, module in document["modules"].items():
        assert "pin" not in module, f"module {module_name}: a PIN belongs in the Secret, not the ConfigMap"
        if "pin_file" in module:
            pin_directory, _, key = module["pin_file"].rpartition("/")
            assert pin_directory == pin_dir, f"module {module_name}: pin_file is not in the Secret's mount"
            assert key in secret["stringData"], f"module {module_name}: the Secret has no key {key}"
            module["pin_file"] = str(tmp_path / key)
    return parse_config(document, tmp_path / name, default_timeout=5.0)


def test_config_is_valid_and_its_pins_come_from_the_secret(tmp_path: Path) -> None:
    config = exporter_config(tmp_path)
    assert config.allowed_targets, "an allow-list, so /probe cannot be used to reach arbitrary hosts"
    assert all(module.pin_source in ("pin_file", "none") for module in config.modules.values())


def test_probe_module_exists_and_allows_every_target(tmp_path: Path) -> None:
    config = exporter_config(tmp_path)
    spec = one("Probe")["spec"]
    module = config.modules.get(spec["module"])
    assert module is not None, f"module {spec['module']} is not in the config file"
    for target in spec["targets"]["staticConfig"]["static"]:
        assert probe_allowed(config, spec["module"], target), f"{target} is outside allowed_targets"
    assert module.timeout_seconds < seconds(spec["scrapeTimeout"]), "the Room's deadline within Prometheus'"


def test_secret_example_holds_no_real_secret() -> None:
    secret = one("Secret")
    assert "data" not in secret, "base64 `data:` hides what the example holds; use stringData placeholders"
    assert secret["stringData"]
    for key, value in secret["stringData"].items():
        assert PLACEHOLDER.search(str(value)), (
            f"{key} looks like a real secret: use a placeholder such as CHANGE-ME"
        )


def test_service_matches_the_pods() -> None:
    service = one("Service")
    deployment = one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    container_ports = {port["name"]: port["containerPort"] for port in exporter_container()["ports"]}
    (port,) = service["spec"]["ports"]
    assert port["port"] == DEFAULT_PORT
    assert port["targetPort"] in container_ports or port["targetPort"] in container_ports.values()


def test_servicemonitor_scrapes_metrics_of_the_service() -> None:
    monitor = one("ServiceMonitor")
    service = one("Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_probe_points_at_the_services_probe_endpoint_with_a_module() -> None:
    probe = one("Probe")
    service = one("Service")
    assert probe["apiVersion"] == "monitoring.coreos.com/v1"
    spec = probe["spec"]
    namespace = service["metadata"].get("namespace") or one("Kustomization")["namespace"]
    assert (
        spec["prober"]["url"]
        == f"{service['metadata']['name']}.{namespace}.svc:{service['spec']['ports'][0]['port']}"
    )
    assert spec["prober"]["path"] == "/probe"
    assert spec["module"], "the module query parameter"
    assert spec["targets"]["staticConfig"]["static"], "at least one Room"
    assert seconds(spec["scrapeTimeout"]) < seconds(spec["interval"])


def test_every_manifest_shares_the_namespace_and_name_label() -> None:
    namespace = one("Kustomization")["namespace"]
    for kind, documents in manifests().items():
        for document in documents:
            if kind == "Kustomization":
                continue
            assert document["metadata"]["namespace"] == namespace, document["__file__"]
            assert document["metadata"]["labels"]["app.kubernetes.io/name"] == "trueconf-exporter"


# ---------------------------------------------------------------------------------------------- systemd


def unit_directives() -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value assigned, in order (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        assert section, f"a directive outside any section: {line}"
        key, equals, value = line.partition("=")
        assert equals, f"not a key=value line: {line}"
        sections[section][key.strip()].append(value.strip())
    return sections


def test_unit_is_hardened() -> None:
    service = unit_directives()["Service"]
    expected = {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert service[key] == [value], key
    assert service["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in service["SystemCallFilter"]


def test_unit_takes_settings_from_a_file_and_the_pin_as_a_credential() -> None:
    service = unit_directives()["Service"]
    assert service["EnvironmentFile"], "EnvironmentFile="
    (credential,) = service["LoadCredential"]
    name, _, source = credential.partition(":")
    assert source.startswith("/"), credential
    assert f"TRUECONF_EXPORTER_PIN_FILE=%d/{name}" in service["Environment"]
    (exec_start,) = service["ExecStart"]
    assert re.fullmatch(r"/\S+/trueconf-exporter serve", exec_start), exec_start
    assert "PIN=" not in UNIT.read_text().replace("PIN_FILE=", "")


def test_unit_environment_file_example_names_real_settings_and_no_pin() -> None:
    assignments = {}
    for raw in UNIT_ENV.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        assert equals and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"not a KEY=value line: {line}"
        assignments[key] = value
    assert assignments.keys() <= SERVE_ENV_VARS, assignments.keys() - SERVE_ENV_VARS
    assert "TRUECONF_EXPORTER_PIN" not in assignments, "the PIN is delivered as a credential file"
    assert int(assignments["TRUECONF_EXPORTER_WEB_LISTEN_ADDRESS"].rpartition(":")[2]) == DEFAULT_PORT


@pytest.fixture
def installed_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's console script: `verify` insists that it exists."""
    script = Path(tool("trueconf-exporter"))
    text = re.sub(
        r"^ExecStart=\S+/trueconf-exporter ", f"ExecStart={script} ", UNIT.read_text(), flags=re.MULTILINE
    )
    assert str(script) in text
    path = tmp_path / UNIT.name
    path.write_text(text)
    return path


def test_systemd_analyze_verify_is_clean(installed_unit: Path) -> None:
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", str(installed_unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=installed_unit.parent,
    )
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0, result.stdout + result.stderr
    assert not complaints, "\n".join(complaints)


def test_systemd_analyze_security_rates_the_unit_well(installed_unit: Path) -> None:
    # Exposure from 0 (locked down) to 10 (open); systemd calls below 2.0 "OK". The unit scores 1.1 with
    # systemd 252; the threshold, in tenths, leaves a little room for other systemd versions' weights.
    result = subprocess.run(
        [
            tool("systemd-analyze"),
            "security",
            "--offline=yes",
            "--threshold=15",
            "--no-pager",
            str(installed_unit),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=installed_unit.parent,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_the_version_is_written_once_and_every_other_mention_is_the_same():
    """pyproject.toml holds the version; the image tag, build argument and docs examples agree with it."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    mention = re.compile(r"(?:trueconf-exporter:|VERSION=)(\d+\.\d+\.\d+)")
    found = {}
    for name in tracked:
        path = ROOT / name
        if path.suffix in {".md", ".yaml", ".yml", ".sh", ".toml"} or path.name == "Dockerfile":
            for version in mention.findall(path.read_text(errors="replace")):
                found.setdefault(version, []).append(name)
    assert found, "the image tag and build argument mention the version somewhere"
    assert set(found) == {__version__}, found

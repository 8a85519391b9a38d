# trueconf-exporter container image: a two-stage build.
#
#   podman build --format docker -t trueconf-exporter .      (or: docker build -t trueconf-exporter .)
#
# BASE_IMAGE is any Debian-like image with python3 (3.11 or newer) and its venv module; both stages use it, so
# the virtual environment built in the first stage runs unchanged in the second. The default is pinned to an
# exact Python and Debian release; pin it harder by digest, or point it at a locally made image where public
# registries cannot be reached (scripts/container-smoke.sh makes one with debootstrap):
#
#   podman build --build-arg BASE_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest> ...
#   podman build --build-arg BASE_IMAGE=localhost/debian-python:bookworm ...
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

# ---- builder: build the wheel and install it with its dependencies into /opt/trueconf-exporter ----
FROM ${BASE_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY . .

# The revision goes into the package too, for trueconf_exporter_build_info{revision}.
ARG REVISION=unknown
RUN printf '%s\n' "$REVISION" > exporter/REVISION \
    && python3 -m venv /opt/trueconf-exporter \
    && /opt/trueconf-exporter/bin/python -m pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && /opt/trueconf-exporter/bin/python -m pip install --no-cache-dir --compile /tmp/wheels/*.whl \
    && /opt/trueconf-exporter/bin/python -m pip uninstall --yes pip setuptools \
    && /opt/trueconf-exporter/bin/trueconf-exporter --version

# ---- final: the base image, the venv (without pip) and an unprivileged user; no compilers ----
FROM ${BASE_IMAGE}

# Filled in by the build (scripts/container-smoke.sh shows how): --build-arg REVISION=$(git rev-parse HEAD) ...
ARG VERSION=0.2.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown

LABEL org.opencontainers.image.title="trueconf-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the outgoing file transfers of TrueConf Room endpoints" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE}"

RUN groupadd --system --gid 10001 exporter \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin exporter

COPY --from=builder /opt/trueconf-exporter /opt/trueconf-exporter

ENV PATH=/opt/trueconf-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRUECONF_EXPORTER_WEB_LISTEN_ADDRESS=:18765

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 18765

# Python's standard library only (the image has no curl); follows TRUECONF_EXPORTER_WEB_LISTEN_ADDRESS.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; h, _, p = os.environ.get('TRUECONF_EXPORTER_WEB_LISTEN_ADDRESS', ':18765').rpartition(':'); h = h.strip('[]') or '127.0.0.1'; h = {'0.0.0.0': '127.0.0.1', '::': '::1'}.get(h, h); u.urlopen('http://' + (f'[{h}]' if ':' in h else h) + f':{p}/healthz', timeout=4)"]

ENTRYPOINT ["/opt/trueconf-exporter/bin/trueconf-exporter"]
CMD ["serve"]

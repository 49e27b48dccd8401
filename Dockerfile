# syntax=docker/dockerfile:1
# voice-runtime serve: the specs live in /etc/voice-runtime/agents.d (mount a
# ConfigMap or a git-sync volume there), plugins in /etc/voice-runtime/plugins.
# tests/e2e/test_image.py builds this file with podman and runs the image's own
# check, test and serve as uid 10001 on a read-only root; test_deploy.py lints it.

# a mirror or a pinned digest: docker build --build-arg BASE_IMAGE=registry.example/python:3.11-slim-bookworm .
ARG BASE_IMAGE=python:3.11-slim-bookworm

# the third-party dependencies pyproject.toml lists (and the examples extra: mcp-server-time,
# the stdio MCP server the example specs use), as a requirements file: the layer that
# installs them is rebuilt only when this list changes, not when the code, the README
# or another table of pyproject.toml does
FROM ${BASE_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print(*p["dependencies"], *p["optional-dependencies"]["examples"], sep="\n")' > requirements.txt

# the virtualenv the image ships, with the dependencies only; no pip, setuptools or
# wheel in it: the base's pip installs into it from outside. The cache mount keeps
# downloaded wheels between builds and out of the image; bytecode is compiled here
# because the root filesystem is read-only at run time
FROM ${BASE_IMAGE} AS dependencies
RUN python -m venv --without-pip /opt/voice-runtime
COPY --from=requirements /src/requirements.txt /opt/voice-runtime/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip --disable-pip-version-check --python /opt/voice-runtime/bin/python \
        install -r /opt/voice-runtime/requirements.txt

# voice-runtime itself, installed into a staging root: the image takes just its files,
# a layer of a few hundred kilobytes rebuilt in seconds when the code changes
FROM dependencies AS build
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY runtime ./runtime
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip --disable-pip-version-check --python /opt/voice-runtime/bin/python \
        install --no-deps --root /staged .

FROM dependencies
# uid and gid 10001 (Kubernetes' runAsNonRoot can verify a number); the name is not
# `voice`: Debian's base-passwd already has a group `voice` (gid 22)
RUN groupadd --system --gid 10001 voice-runtime \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin voice-runtime
COPY --from=build /staged/ /
COPY agents.d /etc/voice-runtime/agents.d
COPY plugins /etc/voice-runtime/plugins
# /tmp is the one path serve writes (its state, the metrics folder its job processes
# share, the job processes' sockets, HOME for MCP servers that cache): everything
# else can be read-only (docker run --read-only --tmpfs /tmp; Kubernetes'
# readOnlyRootFilesystem with an emptyDir on /tmp)
ENV PATH=/opt/voice-runtime/bin:$PATH \
    TMPDIR=/tmp \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /etc/voice-runtime
# the operator port: status page, /healthz, /readyz, /metrics, /status
EXPOSE 8081
# SIGTERM drains: calls in progress finish (up to --drain-timeout), then serve exits 0
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2)"]
ENTRYPOINT ["voice-runtime", "serve"]
CMD ["/etc/voice-runtime/agents.d", "--plugins", "/etc/voice-runtime/plugins", "--log-format", "json"]

# syntax=docker/dockerfile:1
# voice-runtime serve: the specs live in /etc/voice-runtime/agents.d (mount a
# ConfigMap or a git-sync volume there), plugins in /etc/voice-runtime/plugins.
# tests/e2e/test_deploy.py runs this file's install steps (the RUN lines of the
# build stage) in a clean virtualenv and checks the example specs with the result;
# hadolint lints it.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/voice-runtime
COPY pyproject.toml README.md ./
COPY runtime ./runtime
# the examples extra is mcp-server-time, the stdio MCP server the example specs use
RUN /opt/voice-runtime/bin/pip install --no-compile ".[examples]"

FROM python:3.11-slim-bookworm
# a fixed numeric uid: Kubernetes' runAsNonRoot can verify it
RUN useradd --system --uid 10001 --user-group --home-dir /home/voice --create-home --shell /usr/sbin/nologin voice
COPY --from=build /opt/voice-runtime /opt/voice-runtime
COPY agents.d /etc/voice-runtime/agents.d
COPY plugins /etc/voice-runtime/plugins
ENV PATH=/opt/voice-runtime/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /home/voice
# the operator port: status page, /healthz, /readyz, /metrics, /status
EXPOSE 8081
# SIGTERM drains: calls in progress finish (up to --drain-timeout), then serve exits 0
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2)"]
ENTRYPOINT ["voice-runtime", "serve"]
CMD ["/etc/voice-runtime/agents.d", "--plugins", "/etc/voice-runtime/plugins", "--log-format", "json"]

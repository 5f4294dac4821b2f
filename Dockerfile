# syntax=docker/dockerfile:1
# A hub node: `docker build -t hub .`, then
#   docker run --rm -p 8000:8000 -e HUB_JWT_SECRET=... hub
# deploy/compose.yaml runs three nodes, Redis and HAProxy; deploy/kubernetes/ the same on a cluster.

# One pinned base for both stages: the virtualenv built in the first is only valid on the same
# Python. Bump the patch release (and re-run the tests) to pick up security fixes.
FROM python:3.11.15-slim-bookworm AS base

# Build: a virtualenv with hub and its dependencies (all of them ship wheels; no compiler needed).
FROM base AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/hub
# The dependencies at the versions the tests ran with (requirements/run.lock, hashes checked),
# in a layer of their own; then hub on top of them, resolving nothing again.
COPY requirements/run.lock ./requirements/
RUN /opt/hub/bin/pip install --no-cache-dir --require-hashes -r requirements/run.lock
COPY pyproject.toml README.md ./
COPY hub ./hub
RUN /opt/hub/bin/pip install --no-cache-dir --no-deps . \
    && /opt/hub/bin/hub serve --help > /dev/null

# Runtime: the base image plus that virtualenv, run as an unprivileged user with a numeric id
# (so Kubernetes' runAsNonRoot can check it). Nothing is written at run time: the root
# filesystem may be read-only.
FROM base
RUN groupadd --system --gid 10001 hub \
    && useradd --system --uid 10001 --gid hub --no-log-init --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin hub
COPY --from=build /opt/hub /opt/hub
ENV PATH=/opt/hub/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# 8000: WebSockets, REST, /healthz, /readyz and /metrics (behind HUB_STATS_KEY when set).
# 9100: /metrics without the key, only when HUB_METRICS_PORT=9100 is set.
EXPOSE 8000 9100
# Liveness only (/healthz): a draining or Redis-less node is still healthy, just not ready.
# No curl in the image: Python makes the request (compose's readiness check on /readyz too).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# On SIGTERM a node drains: /readyz answers 503, its sockets are closed with 1012 spread over
# HUB_DRAIN_SECONDS, it keeps serving for HUB_UNREADY_SECONDS at least, then it exits 0. Give
# it longer than the longer of the two before a SIGKILL (docker stop --time, compose
# stop_grace_period, terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["hub"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

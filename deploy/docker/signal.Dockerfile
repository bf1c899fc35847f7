# syntax=docker/dockerfile:1
# The signal service: WebRTC signalling and consent.
# Build from the repository root:
#   docker build -f deploy/docker/signal.Dockerfile -t tandem/signal:dev .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Install the service and the two libraries it needs into a venv, with build tools kept here.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tandem
COPY libs/protocol /src/libs/protocol
COPY libs/runtime /src/libs/runtime
COPY services/signal /src/services/signal
RUN /opt/tandem/bin/pip install /src/libs/protocol /src/libs/runtime /src/services/signal

# The runtime image: the venv only, run by an unprivileged user with a fixed uid, so that
# Kubernetes' runAsNonRoot can check it.
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 tandem \
    && useradd --system --uid 10001 --gid tandem --no-create-home --shell /usr/sbin/nologin tandem
COPY --from=build /opt/tandem /opt/tandem
ENV PATH=/opt/tandem/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TANDEM_HOST=0.0.0.0 \
    TANDEM_PORT=8083
USER 10001:10001
EXPOSE 8083
# SIGTERM starts the graceful shutdown: finish requests, close WebSockets, drain NATS.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "tandem_signal"]

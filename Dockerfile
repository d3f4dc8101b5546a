# stream-triggers: one image for every process (worker, executor, topics, admin commands).
#   docker build -t stream-triggers:0.1.0 .
#   docker run --rm stream-triggers:0.1.0 worker --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY stream_triggers ./stream_triggers
RUN pip install . \
    && rm -rf /src

# A fixed, non-root UID (Kubernetes runAsNonRoot checks it); the state directory is
# created here so that a fresh named volume or PVC mounted on it inherits the owner.
RUN groupadd --system --gid 10001 stream-triggers \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/stream-triggers --create-home stream-triggers \
    && mkdir -p /var/lib/stream-triggers/state \
    && chown -R 10001:10001 /var/lib/stream-triggers

USER 10001:10001
WORKDIR /var/lib/stream-triggers
ENV STREAM_TRIGGERS_STATE_DIR=/var/lib/stream-triggers/state \
    STREAM_TRIGGERS_METRICS_PORT=9100
EXPOSE 9100

ENTRYPOINT ["stream-triggers"]
CMD ["--help"]

# tag-gateway as a sidecar: slim Python, non-root, state in /data.
#
# Python 3.11: the README's performance figures were measured on it, and 3.12 and 3.13 served
# fewer hits per second there. BASE lets another image with `python` and `pip` on PATH stand
# in (deploy/check-image.sh builds on a Debian base it makes itself).
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home gateway \
    && mkdir -p /data \
    && chown 10001:10001 /data
# Without a config the image runs the embedded default (dry_run, storage in /data). Mount
# yours and point TAG_GATEWAY_CONFIG at it (README, Running in Docker).

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

# SIGTERM: stop accepting, commit what is queued, give in-flight deliveries up to 6 s, exit 0.
# That fits inside Docker's default 10 s stop timeout.
STOPSIGNAL SIGTERM
# `healthcheck` reads the same config as `serve` and probes /healthz on its port.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["tag-gateway", "healthcheck"]

ENTRYPOINT ["tag-gateway"]
CMD ["serve"]

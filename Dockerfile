# tag-gateway as a sidecar: slim Python, non-root, state in /data.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /data gateway \
    && mkdir -p /data \
    && chown gateway /data
# Without a config the image runs the embedded default (dry_run, storage in /data). Mount
# yours and point TAG_GATEWAY_CONFIG at it (README, Running in Docker).

USER gateway
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

# SIGTERM: stop accepting, commit what is queued, give in-flight deliveries up to 6 s, exit 0.
# That fits inside Docker's default 10 s stop timeout.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"

ENTRYPOINT ["tag-gateway"]
CMD ["serve"]

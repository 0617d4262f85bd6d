# Gatepost: one container for self-hosters.
#   docker build -t gatepost .
#   docker run -p 8080:8080 -v gatepost-data:/data \
#     -v $PWD/config/routes.toml:/etc/gatepost/routes.toml:ro gatepost
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEPOST_CONFIG=/etc/gatepost/routes.toml \
    GATEPOST_DATA_DIR=/data \
    GATEPOST_HOST=0.0.0.0 \
    GATEPOST_PORT=8080

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY scorer ./scorer
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin gatepost \
    && mkdir -p /data /etc/gatepost \
    && chown gatepost:gatepost /data
COPY config/routes.toml /etc/gatepost/routes.toml

USER gatepost
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('GATEPOST_PORT', '8080')}/healthz\", timeout=4).status == 200 else 1)"]

ENTRYPOINT ["gateway"]
CMD ["serve"]

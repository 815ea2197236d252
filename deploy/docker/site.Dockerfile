# fedehr hospital site image (CPU): the site daemon, which runs the Flower
# SuperNode and trains with DP-SGD on the hospital's MEDS data.
#
# Build from the repository root:
#   docker build -f deploy/docker/site.Dockerfile -t fedehr/site:0.1.0 .
# Run (site.yaml, ca.pem and the site key are mounted; the data read-only):
#   docker run -v $PWD/site.yaml:/etc/fedehr/site.yaml:ro \
#              -v /etc/fedehr/pki:/etc/fedehr/pki:ro \
#              -v /srv/fedehr/meds:/srv/fedehr/data:ro -v fedehr-state:/var/lib/fedehr \
#              fedehr/site:0.1.0
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FEDEHR_CACHE_DIR=/var/cache/fedehr \
    HOME=/home/fedehr \
    FEDEHR_METRICS_HOST=127.0.0.1 \
    FEDEHR_METRICS_PORT=9101

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# torch first, pinned, CPU wheel (see consortium.Dockerfile).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/fedehr/src
COPY pyproject.toml setup.py README.md ./
COPY shared ./shared
COPY client ./client
COPY server ./server
RUN pip install . && cd / && rm -rf /opt/fedehr/src

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/fedehr fedehr \
    && mkdir -p /etc/fedehr/pki /var/lib/fedehr /var/cache/fedehr /srv/fedehr/data \
    && chown -R fedehr:fedehr /etc/fedehr/pki /var/lib/fedehr /var/cache/fedehr
# /var/lib/fedehr: state_dir (privacy ledger, token cache, stored replies, logs): keep it,
#                  the ledger must survive every restart and upgrade.
# /srv/fedehr/data: the MEDS export, mounted read-only.
VOLUME ["/var/lib/fedehr", "/srv/fedehr/data"]
USER fedehr
WORKDIR /var/lib/fedehr

# 9094: the SuperNode's local runtime port (port in site.yaml); the site only dials
#       out to the SuperLink, nothing needs to reach this port from outside.
# 9101: /metrics and /healthz (metrics_port in site.yaml).
EXPOSE 9094 9101

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD curl -fsS "http://${FEDEHR_METRICS_HOST}:${FEDEHR_METRICS_PORT}/healthz" || exit 1

ENTRYPOINT ["fedehr"]
CMD ["site", "start", "--config", "/etc/fedehr/site.yaml"]

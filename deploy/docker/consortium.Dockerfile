# fedehr consortium image: the coordination server (Flower SuperLink + ServerApp),
# `fedehr run ...` and `fedehr pki ...` for the operator.
#
# Build from the repository root (the build context is the whole checkout):
#   docker build -f deploy/docker/consortium.Dockerfile -t fedehr/consortium:0.1.0 .
# Run (federation.yaml and the PKI folder are mounted, never baked in):
#   docker run -v $PWD/federation.yaml:/etc/fedehr/federation.yaml:ro \
#              -v $PWD/pki:/etc/fedehr/pki:ro -v fedehr-workdir:/var/lib/fedehr \
#              -p 9093:9093 -p 9100:9100 fedehr/consortium:0.1.0
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FEDEHR_CACHE_DIR=/var/cache/fedehr \
    HOME=/home/fedehr \
    FEDEHR_METRICS_HOST=127.0.0.1 \
    FEDEHR_METRICS_PORT=9100

# curl: the HEALTHCHECK below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# torch first, pinned, from the CPU index, so `pip install .` finds it satisfied
# instead of pulling a CUDA build (same order as `make install`).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/fedehr/src
COPY pyproject.toml setup.py README.md ./
COPY shared ./shared
COPY client ./client
COPY server ./server
RUN pip install . && cd / && rm -rf /opt/fedehr/src

# A dedicated unprivileged user; the folders it writes are volumes owned by it.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/fedehr fedehr \
    && mkdir -p /etc/fedehr/pki /var/lib/fedehr /var/cache/fedehr \
    && chown -R fedehr:fedehr /etc/fedehr/pki /var/lib/fedehr /var/cache/fedehr
VOLUME ["/var/lib/fedehr", "/var/cache/fedehr"]
USER fedehr
WORKDIR /var/lib/fedehr

# 9093: the SuperLink (Fleet, Control and Runtime APIs on one TLS port, flwr 1.42).
# 9100: /metrics and /healthz (metrics_port in federation.yaml).
EXPOSE 9093 9100

# The server binds its metrics endpoint to superlink.host of federation.yaml; set
# FEDEHR_METRICS_HOST to that name when it is not a wildcard/loopback address.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD curl -fsS "http://${FEDEHR_METRICS_HOST}:${FEDEHR_METRICS_PORT}/healthz" || exit 1

ENTRYPOINT ["fedehr"]
CMD ["server", "start", "--config", "/etc/fedehr/federation.yaml"]

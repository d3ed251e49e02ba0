# One image for every component; the entrypoint is the `switchyard` command:
#   switchyard operator | switchyard gateway ... | switchyard worker ...
#
#   docker build -t ghcr.io/switchyard-dev/switchyard:0.1.0 .
#
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
 && /opt/switchyard/bin/pip wheel --wheel-dir /wheels ".[operator,uvloop]" \
 && /opt/switchyard/bin/pip install --no-index --find-links /wheels "switchyard[operator,uvloop]"

# -- runtime: the virtual environment only, no compiler, no sources ----------------------
FROM python:3.11-slim
COPY --from=build /opt/switchyard /opt/switchyard
ENV PATH=/opt/switchyard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TMPDIR=/tmp
# The numeric user needs no /etc/passwd entry; Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["switchyard"]
CMD ["--help"]

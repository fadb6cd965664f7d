# Breakout DQN images. Three targets from one file:
#   train (default, full):  docker build --target train -t breakout-dqn .
#   serve (slim, no TF):    docker build --target serve -t breakout-dqn-serve .
#   train-gpu (NVIDIA):     docker build --target train-gpu -t breakout-dqn-gpu .  (docs/guides/gpu.md)
# BASE_IMAGE may be any Debian-like image with python3 (>= 3.10), venv and pip, e.g. a local
# debootstrap image where no registry can be reached (see scripts/container-smoke.sh).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# Everything the commands write besides their outputs (Keras' config, matplotlib's cache,
# TensorFlow's autograph files, other caches under $HOME) goes under /tmp: the containers run with
# a read-only root filesystem and a writable /tmp (Kubernetes: an emptyDir, deploy/k8s; Docker:
# --read-only --tmpfs /tmp). The user is numeric (10001) so runAsNonRoot can verify it.
ENV HOME=/tmp \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib
RUN python3 -m venv /opt/venv \
 && groupadd --gid 10001 dqn \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin dqn \
 && mkdir -p /models && chown 10001:10001 /models
WORKDIR /opt/breakout-dqn
# The pins of every dependency (bash scripts/lock.sh): an image built later gets the same packages.
COPY requirements/constraints.txt ./requirements/
COPY pyproject.toml ./
# Each target installs its dependencies first, from pyproject.toml and an empty stand-in for the
# package (removed again once they are in), then the code on top with --no-deps: a change to
# the code reuses the dependency layer instead of installing TensorFlow again.
# (the stage folders too: pyproject.toml maps training/, export/, serving/ and models/ into breakout_dqn)
RUN mkdir -p breakout/v1 breakout_dqn training/learners export serving models \
 && touch README.md breakout/__init__.py && echo "__version__ = \"0\"" > breakout_dqn/__init__.py
# `serve` binds all interfaces in a container (its host default is 127.0.0.1) and the HEALTHCHECK
# probes $BREAKOUT_DQN_PORT: change the port with `-e BREAKOUT_DQN_PORT=N`, not `--port`.
# Once installed, the source folders go: in /opt/breakout-dqn, `python -m breakout_dqn...` (the
# HEALTHCHECK) would import the uninstalled breakout_dqn/ from the working directory, which lacks the
# stages pyproject.toml maps into it. models/ stays: $BREAKOUT_DQN_MODEL points there.
ENV BREAKOUT_DQN_MODEL=/opt/breakout-dqn/models/breakout-dqn.onnx \
    BREAKOUT_DQN_HOST=0.0.0.0 \
    BREAKOUT_DQN_PORT=50051

# The code, copied into each target after its dependencies.
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY breakout_dqn /src/breakout_dqn
COPY breakout /src/breakout
COPY training /src/training
COPY export /src/export
COPY serving /src/serving
COPY models /src/models

# Slim serving image: numpy, onnxruntime, grpcio (+ health, reflection), protobuf. No TensorFlow.
FROM base AS serve
RUN pip install --no-compile --constraint requirements/constraints.txt ".[serve]" \
 && pip uninstall -y breakout-dqn && rm -rf build ./*.egg-info breakout_dqn breakout training export serving models README.md
COPY --from=source /src ./
RUN pip install --no-compile --no-deps . \
 && rm -rf build breakout_dqn breakout training export serving \
 && (pip uninstall -y pip setuptools >/dev/null 2>&1 || true)
USER 10001:10001
VOLUME ["/models"]
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-m", "breakout_dqn.serving.healthcheck"]
ENTRYPOINT ["breakout-dqn"]
CMD ["serve"]

# Training on NVIDIA GPUs: the full image with TensorFlow built for CUDA and JAX's CUDA 12 plugin (the
# `gpu` extra). The CUDA libraries come as pip wheels, so BASE_IMAGE needs no CUDA of its own; the host
# gives the driver (docker run --gpus all, the NVIDIA container toolkit). Keras' backend is TensorFlow
# unless -e KERAS_BACKEND=jax (or `train --backend jax`); `train --device gpu` refuses to run on a CPU.
FROM base AS train-gpu
RUN pip install --constraint requirements/constraints.txt ".[gpu]" \
 && pip uninstall -y breakout-dqn && rm -rf build ./*.egg-info breakout_dqn breakout training export serving models README.md
COPY --from=source /src ./
RUN pip install --no-deps . && rm -rf build breakout_dqn breakout training export serving
USER 10001:10001
VOLUME ["/models"]
# Runs go to the volume by default (train --out runs/breakout -> /models/runs/breakout): the root is read-only.
WORKDIR /models
HEALTHCHECK NONE
ENTRYPOINT ["breakout-dqn"]
CMD ["--help"]

# Full image: training, evaluation, export, verify, serve and play.
FROM base AS train
RUN pip install --constraint requirements/constraints.txt ".[train]" \
 && pip uninstall -y breakout-dqn && rm -rf build ./*.egg-info breakout_dqn breakout training export serving models README.md
COPY --from=source /src ./
RUN pip install --no-deps . && rm -rf build breakout_dqn breakout training export serving
USER 10001:10001
VOLUME ["/models"]
# Runs go to the volume by default (train --out runs/breakout -> /models/runs/breakout): the root is read-only.
WORKDIR /models
EXPOSE 50051
# A batch job has no server to probe; run `serve` from the slim image for a health-checked service.
HEALTHCHECK NONE
ENTRYPOINT ["breakout-dqn"]
CMD ["--help"]

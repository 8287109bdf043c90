# GPU image: docker build -t lnl . && docker run --gpus all -v $PWD/data:/workspace/data -v $PWD/runs:/workspace/runs lnl
# The torch wheel pinned in requirements.txt carries its own CUDA runtime (CUDA 13.0: NVIDIA driver R580 or
# newer on the host); the NVIDIA container toolkit (--gpus) mounts the host's driver. So the base is a plain
# Python image: no CUDA user space of its own, and no NVIDIA_REQUIRE_CUDA check that refuses to start on a
# driver older than the base image's CUDA. For an older driver, build with a torch wheel of an older CUDA:
#   docker build --build-arg TORCH="torch==2.14.1+cu126 torchvision==0.29.1+cu126" \
#       --build-arg PIP_EXTRA_INDEX_URL=<the PyTorch wheel index for cu126> -t lnl .
FROM python:3.11.11-slim-bookworm

ARG TORCH=""
ARG PIP_EXTRA_INDEX_URL=""
# the commit runs record (.git stays out of the image): --build-arg COMMIT=$(git rev-parse --short=12 HEAD)
ARG COMMIT=""
ENV LNL_COMMIT=$COMMIT \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    XDG_CACHE_HOME=/workspace/data/.cache

WORKDIR /workspace
COPY requirements.txt requirements-dev.txt ./
RUN if [ -n "$TORCH" ]; then pip install $TORCH && grep -v '^torch' requirements.txt > /tmp/rest.txt \
         && pip install -r /tmp/rest.txt; else pip install -r requirements.txt; fi

COPY . .
RUN chmod +x train.sh test.sh .ci/run && mkdir -p /workspace/data /workspace/runs

# Data (and the verified MNIST cache) and runs live in mounted volumes so they outlive the container.
VOLUME ["/workspace/data", "/workspace/runs"]
CMD ["bash", "train.sh"]

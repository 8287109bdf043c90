# GPU image: docker build -t lnl . && docker run --gpus all -v $PWD/data:/workspace/data -v $PWD/runs:/workspace/runs lnl
# The torch wheel pinned in requirements.txt carries its own CUDA libraries; the base image pins the
# user-space CUDA stack and the OS, and the host only needs a recent NVIDIA driver.
FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    XDG_CACHE_HOME=/workspace/data/.cache

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /workspace
COPY requirements.txt requirements-dev.txt ./
RUN pip install -r requirements.txt

COPY . .
RUN chmod +x train.sh test.sh .ci/run && mkdir -p /workspace/data /workspace/runs

# Data (and the verified MNIST cache) and runs live in mounted volumes so they outlive the container.
VOLUME ["/workspace/data", "/workspace/runs"]
CMD ["bash", "train.sh"]

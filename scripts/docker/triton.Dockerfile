# Triton 2.71 (NGC 26.07): past every Triton CVE published so far, the unauthenticated HTTP and
# Python-backend shared-memory chains of 25.07 (CVE-2025-23310/23311/23319/23320/23334), the oversized-payload
# crash fixed in 25.10 (CVE-2025-33201) and the 2026 bulletins fixed by 26.03 (CVE-2026-24146/24173/24207...).
# Its Python is 3.12 (Ubuntu 24.04): the packages go into a venv made from that Python, whose libpython the
# backend stub links. Build context: the repository root (docker-compose.yml sets it).
FROM nvcr.io/nvidia/tritonserver:26.07-py3

# torch's CUDA build must match the base image's CUDA major: 26.07 is CUDA 13.3.1, which needs an NVIDIA driver
# >= 580 (data-center GPUs: a forward-compatible branch; see the README). PyPI's torch 2.13.0 is its CUDA 13.0
# build (it pulls nvidia-*-cu13). Another CUDA means another base image too, e.g. for CUDA 12:
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 --build-arg TORCH_CUDA=12
# The build fails when the installed torch was not built for TORCH_CUDA.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://pypi.org/simple
ARG TORCH_CUDA=13

COPY scripts/docker/requirements-triton.txt /opt/lora/requirements-triton.txt
RUN python3 -m venv /opt/lora/venv \
 && /opt/lora/venv/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && /opt/lora/venv/bin/pip install --no-cache-dir -r /opt/lora/requirements-triton.txt \
 && /opt/lora/venv/bin/python -c "import sys, torch; cuda = torch.version.cuda or 'none'; \
sys.exit(0 if cuda.split('.')[0] == '${TORCH_CUDA}' else f'torch {torch.__version__} is built for CUDA {cuda}, not ${TORCH_CUDA}')"

# The engine package, the cluster layer (the node agent; etcd for ETCD_ENDPOINTS), the launcher and its watchdog.
COPY lora_core/ /opt/lora/lora_core/
COPY lora_cluster/ /opt/lora/lora_cluster/
COPY adapter_manager/ /opt/lora/adapter_manager/
COPY scripts/run_triton.py scripts/supervisor.py scripts/die_with_parent.py /opt/lora/scripts/
# The model repository is part of the image (Kubernetes mounts none); docker-compose still mounts the checkout's.
COPY model_repository/ /opt/lora/model_repository/

# The backend stub ignores PYTHONPATH; run_triton.py hands the venv's packages to model.py in
# LORA_CLASSIFIER_PYTHONPATH.
ENV TRITONSERVER_ROOT=/opt/tritonserver \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_VERBOSITY=error

WORKDIR /opt/lora
# One KIND_GPU instance per visible GPU; Triton's own ports inside the container, on every interface of the
# compose network (not published to the host). --watchdog: a hung tritonserver ends the container, and the
# restart policy replaces it. CONTROL_TOKEN (required by docker-compose.yml) guards control and the
# restricted APIs.
CMD ["/opt/lora/venv/bin/python", "scripts/run_triton.py", "--watchdog", "--kind=gpu", "--instances=1", \
     "--bind-address=0.0.0.0", "--model-repository=/opt/lora/model_repository", "--run-dir=/tmp/lora-run", \
     "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"]

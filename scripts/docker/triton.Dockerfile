# Triton 2.51 (the version of the local binary) with the Python packages lora_classifier imports.
# Build context: the repository root (docker-compose.yml sets it).
FROM nvcr.io/nvidia/tritonserver:24.10-py3

COPY scripts/docker/requirements-triton.txt /opt/lora/requirements-triton.txt
RUN pip install --no-cache-dir -r /opt/lora/requirements-triton.txt

# The engine package and the launcher; model_repository/ is mounted by docker-compose.
COPY adapter_manager/ /opt/lora/adapter_manager/
COPY scripts/run_triton.py /opt/lora/scripts/run_triton.py

# The backend stub ignores PYTHONPATH; model.py reads this variable instead.
ENV LORA_CLASSIFIER_PYTHONPATH=/opt/lora \
    TRITONSERVER_ROOT=/opt/tritonserver \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_VERBOSITY=error

WORKDIR /opt/lora
# One KIND_GPU instance per visible GPU; Triton's own ports inside the container.
CMD ["python3", "scripts/run_triton.py", "--kind=gpu", "--instances=1", "--model-repository=/opt/lora/model_repository", \
     "--run-dir=/tmp/lora-run", "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"]

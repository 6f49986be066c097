# The REST shim: Flask under gunicorn, tritonclient, no torch.
# Build context: the repository root (docker-compose.yml sets it).
FROM python:3.11-slim

WORKDIR /opt/lora
COPY scripts/docker/requirements-api.txt requirements-api.txt
RUN pip install --no-cache-dir -r requirements-api.txt

# Whole packages: the shim, the torch-free core it shares with the engine, and the cluster layer, which the shim
# imports only with ETCD_ENDPOINTS set (status over every node). tests/test_deployment.py checks that these are all
# the shim imports, with torch absent, and that it starts without the cluster layer's packages when no etcd is set.
COPY lora_core/ lora_core/
COPY lora_cluster/ lora_cluster/
COPY api_shim/ api_shim/

USER nobody
EXPOSE 8000
CMD ["gunicorn", "-c", "api_shim/gunicorn.conf.py", "api_shim.wsgi:app"]

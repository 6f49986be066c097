# The REST shim: Flask under gunicorn, tritonclient, no torch.
# Build context: the repository root (docker-compose.yml sets it).
FROM python:3.11-slim

WORKDIR /opt/lora
COPY scripts/docker/requirements-api.txt requirements-api.txt
RUN pip install --no-cache-dir -r requirements-api.txt

# The shim imports only the torch-free modules of adapter_manager (tests/test_deployment.py checks this list
# against what it really imports).
COPY adapter_manager/__init__.py adapter_manager/errors.py adapter_manager/settings.py adapter_manager/layout.py adapter_manager/control_token.py adapter_manager/
COPY api_shim/ api_shim/

USER nobody
EXPOSE 8000
CMD ["gunicorn", "-c", "api_shim/gunicorn.conf.py", "api_shim.wsgi:app"]

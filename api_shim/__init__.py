"""The REST shim: the /api/v1/inference contract in front of Triton. Holds no state; never imports torch.

The application is `api_shim.app.create_app` (gunicorn loads `api_shim.wsgi:app`). This file imports nothing,
so that torch- and Flask-free parts (metrics, status) can be used where neither is installed.
"""

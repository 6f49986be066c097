"""WSGI entry point for gunicorn: `gunicorn -c api_shim/gunicorn.conf.py api_shim.wsgi:app`."""

from .app import create_app

app = create_app()

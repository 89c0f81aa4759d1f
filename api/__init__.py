"""The HTTP API (FastAPI): :func:`api.app.create_api` builds it from the composition root's services."""

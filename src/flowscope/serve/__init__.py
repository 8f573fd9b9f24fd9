"""serve: the HTTP side of flowscope — JSON API (``/api/v1``), live push (Server-Sent Events),
Prometheus metrics (``/metrics``) and the dashboard pages (``static/``).

``sinks`` holds the result sinks the engine emits to (no web dependency: the pipeline imports it);
``app`` builds the ASGI application over a ``Dashboard`` (what the API reads); ``server`` runs it
with uvicorn in a background thread.
"""

"""HTTP and WebSocket handlers: decode the request, call a core service, encode the reply.

No decisions are made here; statuses for core errors come from one table in `errors.py`.
"""

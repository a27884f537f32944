"""The local API (``/api/v1``) for caseworkers, reception officers, auditors and admins.

Served on its own port, over HTTPS with the node's certificate, separate from
the mutual-TLS federation endpoint. Every request but the health checks,
metrics and the OpenAPI document carries a bearer token (node.api.users); every
handler states the roles it admits; a user only ever sees data of their own
authority. The OpenAPI 3.1 document in ``schemas/api/openapi.json`` describes
it and supplies the JSON Schemas that request bodies are validated against.
"""

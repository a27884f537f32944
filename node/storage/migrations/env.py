"""Alembic environment: always driven from node.storage.migrate with a live connection."""

from __future__ import annotations

from alembic import context

import node.storage.api_models
import node.storage.consent_models  # registers its tables on Base.metadata
import node.storage.directory_models  # noqa: F401  (registers directory_history)
from node.storage import audit_models, delivery_models  # noqa: F401  (register their tables)
from node.storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `puente migrate`, which supplies a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

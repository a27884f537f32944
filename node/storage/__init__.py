"""Persistence: SQLAlchemy 2.0 async models, engine set-up and Alembic migrations.

The same models and migrations run on SQLite (the default, one file in the
data directory) and on PostgreSQL (when the config's database URL says so).
"""

"""Alembic migration scripts (package data; configured in code by ``hatchway.store.database``)."""

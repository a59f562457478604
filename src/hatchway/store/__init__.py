"""Persistent state: SQLAlchemy Core schema, Alembic migrations and small repositories.

Every other package reaches the database only through the repositories here, so the embedded
default (SQLite) and the scale-out backend (PostgreSQL) share one contract.
"""

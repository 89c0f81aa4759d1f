"""The job table and model registry: SQLAlchemy schema, sessions, repository functions."""

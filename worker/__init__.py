"""Celery workers: process a job in chunks, finalize it, sweep for lost work."""

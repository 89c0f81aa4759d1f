"""Task names and queues, what the API and the workers must agree on.

A module of its own so that the API, the CLI and the beat schedule can send
tasks without importing the model code (torch) that runs them.
"""
PROCESS_JOB = "worker.tasks.process_job"
CLASSIFY_CHUNK = "worker.tasks.classify_chunk"
FINALIZE_JOB = "worker.tasks.finalize_job"
SWEEP = "worker.tasks.sweep"
RETRAIN = "worker.tasks.retrain"
TRAINING_QUEUE = "training"  # its own queue: a retrain waits behind at most one task per worker process

"""The worker: queue consumer, run driving, stalled-job recovery."""

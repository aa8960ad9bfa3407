"""Kafka stream inference: `worker` (consume -> score -> produce -> commit, at least once)."""

"""Streaming fixtures: the real local Kafka broker (tests.local_services) and a real
registry export; helpers to create topics and read them back."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from workloads.streaming.topics import Topics


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory) -> Path:
    given = os.environ.get("STRATA_TEST_REGISTRY_DIR")
    if given:
        return Path(given)
    from workloads.serving.testing import make_registry

    return make_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def kafka(local_services) -> str:  # the root conftest's plugin: tests.local_services
    return local_services("kafka").kafka_bootstrap


def new_topic_names(prefix: str = "t") -> Topics:
    run = uuid.uuid4().hex[:8]
    return Topics(f"{prefix}-{run}.input", f"{prefix}-{run}.scored", f"{prefix}-{run}.dlq")


def create_topics(bootstrap: str, partitions: int = 3, prefix: str = "t", topics: Topics | None = None) -> Topics:
    from kafka.admin import KafkaAdminClient, NewTopic

    topics = topics or new_topic_names(prefix)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="strata-test-admin")
    try:
        admin.create_topics([NewTopic(topics.input, partitions, 1), NewTopic(topics.output, partitions, 1),
                             NewTopic(topics.dead_letter, 1, 1)])
    finally:
        admin.close()
    return topics


def read_topic(bootstrap: str, topic: str, until=None, timeout: float = 60.0) -> list:
    """Every record of `topic` from the beginning (all partitions), until `until(records)`
    is true or `timeout` passes."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=500)
    deadline = time.monotonic() + timeout
    partitions = None
    while partitions is None and time.monotonic() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            time.sleep(0.2)
    tps = [TopicPartition(topic, p) for p in sorted(partitions or [])]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    records: list = []
    while time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=300)
        for items in batch.values():
            records.extend(items)
        if until is not None and until(records):
            break
        if until is None and not batch:
            break
    consumer.close()
    return records

"""The KRaft cluster id handed to the storage tool must parse as a Kafka Uuid and never as an option."""

import base64
from unittest import mock

from workloads.local import kafka_setup


def test_cluster_id_is_16_bytes_of_urlsafe_base64():
    cluster_id = kafka_setup.new_cluster_id()
    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_cluster_id_never_starts_with_a_dash():
    # Force the first draws to encode to ids starting with '-' (0xf8.. -> '-' in URL-safe base64).
    dashed = mock.Mock(bytes=bytes([0xF8]) + bytes(15))
    plain = mock.Mock(bytes=bytes([0x10]) + bytes(15))
    with mock.patch.object(kafka_setup.uuid, "uuid4", side_effect=[dashed, dashed, plain]):
        cluster_id = kafka_setup.new_cluster_id()
    assert not cluster_id.startswith("-")
    assert base64.urlsafe_b64decode(cluster_id + "==") == plain.bytes

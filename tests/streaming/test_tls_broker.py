"""Kafka mutual TLS against a real broker (issue 12 item 12), not as option dicts.

A KRaft broker of its own (the local broker's jars and config writer) with an SSL listener
that requires client certificates; the CA, the broker's and the clients' certificates are
made here with `cryptography`. The stream worker, configured as the catalogue configures it
on the cluster (CA + the KafkaUser's certificate and key), scores over that listener; a
client without a certificate, or with one the CA did not sign, is refused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.streaming.conftest import create_topics, read_topic
from tests.streaming.test_worker import SCHEMA, record_bytes
from workloads.serving.testing import sample_rows
from workloads.streaming.tls import security_options
from workloads.streaming.worker import StreamWorker, WorkerConfig

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Pki:
    """A CA and certificates it signs (PEM files under `directory`)."""

    def __init__(self, directory: Path, name: str = "strata-test-ca"):
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (self._builder(subject, subject, self.key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, self._hash()))
        self.ca_file = self._write(f"{name}.crt", self._pem(self.cert))

    @staticmethod
    def _hash():
        from cryptography.hazmat.primitives import hashes

        return hashes.SHA256()

    @staticmethod
    def _builder(subject, issuer, public_key):
        from cryptography import x509

        now = dt.datetime.now(dt.timezone.utc)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1)))

    @staticmethod
    def _pem(cert) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return cert.public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def _key_pem(key) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def _write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def issue(self, name: str, *, server: bool) -> tuple[Path, Path]:
        """(certificate, key) files for `name`, signed by this CA."""
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        builder = (self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), self.cert.subject,
                                 key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                         else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]), critical=False)
        cert = builder.sign(self.key, self._hash())
        return self._write(f"{name}.crt", self._pem(cert)), self._write(f"{name}.key", self._key_pem(key))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    """A KRaft broker: PLAINTEXT (the test's own admin) + SSL with `ssl.client.auth=required`."""
    from workloads.local import kafka_setup
    from workloads.local.services import LocalOptions

    jars = kafka_setup.ensure_jars(LocalOptions().resolved_cache_dir())
    tmp = tmp_path_factory.mktemp("tls-broker")
    pki = Pki(tmp / "pki")
    broker_cert, broker_key = pki.issue("broker", server=True)
    keystore = pki._write("broker-keystore.pem", broker_key.read_bytes() + broker_cert.read_bytes())
    plain, tls, controller = _free_port(), _free_port(), _free_port()
    config = kafka_setup.write_config(tmp / "config", tmp / "data", plain, controller)
    props = config.read_text()
    props = props.replace(f"listeners=PLAINTEXT://{HOST}:{plain},",
                          f"listeners=PLAINTEXT://{HOST}:{plain},SSL://{HOST}:{tls},")
    props = props.replace(f"advertised.listeners=PLAINTEXT://{HOST}:{plain}",
                          f"advertised.listeners=PLAINTEXT://{HOST}:{plain},SSL://{HOST}:{tls}")
    props = props.replace("listener.security.protocol.map=PLAINTEXT:PLAINTEXT,",
                          "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,")
    assert f"SSL://{HOST}:{tls}" in props and "SSL:SSL" in props
    props += (f"ssl.keystore.type=PEM\nssl.keystore.location={keystore}\n"
              f"ssl.truststore.type=PEM\nssl.truststore.location={pki.ca_file}\n"
              "ssl.client.auth=required\nssl.endpoint.identification.algorithm=https\n")
    config.write_text(props)
    log_path = tmp / "broker.log"
    kafka_setup.ensure_formatted(jars, config, tmp / "data", log_path)
    log = open(log_path, "ab")
    broker = subprocess.Popen(kafka_setup.broker_command(jars, config), stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if broker.poll() is not None:
                raise RuntimeError(f"the TLS broker exited ({broker.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection((HOST, tls), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the TLS broker did not listen in 180 s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield {"plain": f"{HOST}:{plain}", "tls": f"{HOST}:{tls}", "pki": pki, "log": log_path}
    finally:
        broker.terminate()
        try:
            broker.wait(30)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait(10)
        log.close()


def _refused(bootstrap: str, **options) -> Exception:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    with pytest.raises(KafkaError) as caught:
        producer = KafkaProducer(bootstrap_servers=bootstrap, max_block_ms=8000, **options)
        try:  # the handshake may only fail on the first request
            producer.send("strata-tls-probe", b"x").get(timeout=8)
        finally:
            producer.close(timeout=2)
    return caught.value


def test_the_stream_worker_scores_over_mutual_tls(tls_broker, registry_root):
    from kafka import KafkaProducer

    pki = tls_broker["pki"]
    cert, key = pki.issue("fraud-stream", server=False)  # what the KafkaUser's Secret holds
    topics = create_topics(tls_broker["plain"], partitions=2, prefix="tls")
    rows = sample_rows(SCHEMA, 30, seed=9)
    client = security_options(str(pki.ca_file), str(cert), str(key))
    assert client["security_protocol"] == "SSL"
    producer = KafkaProducer(bootstrap_servers=tls_broker["tls"], acks="all", **client)
    for i, row in enumerate(rows):
        producer.send(topics.input, key=f"k-{i}".encode(), value=record_bytes(row))
    producer.flush()
    producer.close()
    worker = StreamWorker(WorkerConfig(bootstrap=tls_broker["tls"], model="fraud", registry_dir=str(registry_root),
                                       topics=topics, group_id=f"g-{topics.input}", batch_size=8,
                                       session_timeout_ms=6000, ssl_cafile=str(pki.ca_file),
                                       ssl_certfile=str(cert), ssl_keyfile=str(key)),
                          metrics_registry=CollectorRegistry())
    worker.start().run(idle_exit_s=4)
    scored = read_topic(tls_broker["plain"], topics.output, until=lambda rs: len(rs) >= len(rows), timeout=60)
    assert sorted(r.key.decode() for r in scored) == sorted(f"k-{i}" for i in range(len(rows)))
    assert all("proba_1" in json.loads(r.value)["scores"] for r in scored)


def test_a_client_without_a_certificate_the_ca_signed_is_refused(tls_broker, tmp_path):
    pki = tls_broker["pki"]
    # no client certificate at all
    _refused(tls_broker["tls"], security_protocol="SSL", ssl_cafile=str(pki.ca_file), ssl_check_hostname=True)
    # a certificate from another CA
    rogue_cert, rogue_key = Pki(tmp_path / "rogue", name="rogue-ca").issue("fraud-stream", server=False)
    _refused(tls_broker["tls"], **security_options(str(pki.ca_file), str(rogue_cert), str(rogue_key)))
    # and a broker certificate the client's CA did not sign is refused by the client
    other = Pki(tmp_path / "other", name="other-ca")
    cert, key = pki.issue("fraud-stream-2", server=False)
    _refused(tls_broker["tls"], **security_options(str(other.ca_file), str(cert), str(key)))

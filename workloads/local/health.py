"""Readiness checks: real requests to the real services (stdlib only).

- HTTP services: GET a readiness path (Prometheus/Alertmanager ``/-/ready``, MLflow
  ``/health``, the PagerDuty receiver ``/health``) and expect 200.
- Kafka: speak the Kafka wire protocol: an ApiVersions request, then a Metadata request at
  a version the broker supports; ready when the broker lists at least one live broker.
"""

from __future__ import annotations

import socket
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass

from workloads.local.ports import HOST


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str

    def __bool__(self) -> bool:
        return self.ok


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_check(port: int, path: str, host: str = HOST, timeout: float = 2.0) -> Health:
    url = f"http://{host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read(200).decode("utf-8", "replace").strip()
            return Health(resp.status == 200, f"GET {path} -> {resp.status} {body[:60]}")
    except urllib.error.HTTPError as exc:
        return Health(False, f"GET {path} -> {exc.code}")
    except (OSError, ValueError) as exc:
        return Health(False, f"GET {path}: {getattr(exc, 'reason', exc)}")


# --- Kafka wire protocol -------------------------------------------------------------------
_API_METADATA = 3
_API_VERSIONS = 18


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client = b"strata-local-health"
    header = struct.pack(">hhih", api_key, version, corr, len(client)) + client
    sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    payload = _recv_exact(sock, size)
    (corr_back,) = struct.unpack(">i", payload[:4])
    if corr_back != corr:
        raise ConnectionError(f"correlation id mismatch ({corr_back} != {corr})")
    return payload[4:]


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        vals = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return vals[0] if len(vals) == 1 else vals

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return s


def kafka_metadata(port: int, host: str = HOST, timeout: float = 3.0) -> dict:
    """Broker list and cluster id through ApiVersions + Metadata (v4..v8) requests."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        r = _Reader(_request(sock, _API_VERSIONS, 0, 1, b""))
        error = r.take(">h")
        if error:
            raise ConnectionError(f"ApiVersions error code {error}")
        versions = {}
        for _ in range(r.take(">i")):
            key, lo, hi = r.take(">hhh")
            versions[key] = (lo, hi)
        lo, hi = versions.get(_API_METADATA, (0, -1))
        version = max(lo, 4)
        if version > min(hi, 8):
            raise ConnectionError(f"broker supports Metadata v{lo}-v{hi}, health check speaks v4-v8")
        body = struct.pack(">i?", -1, False)  # all topics, no auto-creation
        if version >= 8:
            body += struct.pack(">??", False, False)
        r = _Reader(_request(sock, _API_METADATA, version, 2, body))
        r.take(">i")  # throttle_time_ms
        brokers = []
        for _ in range(r.take(">i")):
            node = r.take(">i")
            bhost = r.string()
            bport = r.take(">i")
            r.string()  # rack
            brokers.append((node, bhost, bport))
        cluster_id = r.string()
        controller = r.take(">i")
        return {
            "brokers": brokers,
            "cluster_id": cluster_id,
            "controller_id": controller,
            "api_versions": len(versions),
            "metadata_version": version,
        }


def kafka_check(port: int, host: str = HOST) -> Health:
    try:
        meta = kafka_metadata(port, host)
    except (OSError, ConnectionError, struct.error) as exc:
        return Health(False, f"Kafka metadata: {exc}")
    if not meta["brokers"]:
        return Health(False, "Kafka metadata: no live brokers yet")
    node, bhost, bport = meta["brokers"][0]
    return Health(True, f"broker {node} at {bhost}:{bport}, cluster {meta['cluster_id']}")

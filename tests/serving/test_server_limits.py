"""The model server's process group listens on loopback only, and a request that waited past
the queue budget is shed at once (REST 503 + Retry-After, gRPC UNAVAILABLE + retry-after),
counted, while everything else is answered."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.processes import group_pids
from tests.serving.conftest import start_server
from workloads.serving.testing import fraud_schema, sample_rows

ROW = [float(v) for v in sample_rows(fraud_schema(), 1, seed=3)[0]]
BODY = json.dumps({"data": {"ndarray": [ROW]}})


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(match.group(1))
    return inodes


def listening_addresses(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state held by `pids` (IPv4 and IPv6)."""
    inodes = set().union(*(socket_inodes(pid) for pid in pids))
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)  # the kernel prints 32-bit words in host (little-endian) order
            host = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
            found.append((host, int(port, 16)))
    return found


def is_loopback(host: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(host, "ipv4_mapped", None)  # ::ffff:127.0.0.1 (grpc's dual-stack socket)
    return host.is_loopback or bool(mapped and mapped.is_loopback)


def test_every_port_of_the_server_listens_on_loopback_only(server):
    listening = listening_addresses(group_pids(server.proc.pid))
    ports = {port for _, port in listening}
    assert {server.config.http_port, server.config.grpc, server.config.metrics} <= ports, listening
    beyond = [(str(host), port) for host, port in listening if not is_loopback(host)]
    assert not beyond, f"listening beyond loopback: {beyond}"


def _rejected_overloaded(metrics_text: str, protocol: str) -> float:
    total = 0.0
    for match in re.finditer(r'^strata_serving_requests_total\{([^}]*)\} ([0-9.e+]+)$', metrics_text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if labels["protocol"] == protocol and labels["code"] == "503":
            total += float(match.group(2))
    return total


def test_requests_past_the_queue_budget_are_shed_with_retry_after(serving_env, registry_root, tmp_path):
    """One thread per protocol and a 1 ms budget: of 48 requests at once, those that waited
    are shed; every answer is a 200 or a counted 503 with Retry-After, never a timeout."""
    with start_server(registry_root, tmp_path, threads=1, grpc_threads=1, queue_budget_ms=1.0) as srv:
        def post(_: int) -> requests.Response:
            return requests.post(srv.url + "/api/v1.0/predictions", data=BODY,
                                 headers={"Content-Type": "application/json"}, timeout=30)

        with ThreadPoolExecutor(max_workers=48) as pool:
            answers = list(pool.map(post, range(48)))
        codes = [a.status_code for a in answers]
        assert set(codes) <= {200, 503}, codes
        shed = [a for a in answers if a.status_code == 503]
        assert shed, codes
        for answer in shed:
            assert answer.headers["Retry-After"] == "1"
            status = answer.json()["status"]
            assert status["reason"] == "overloaded" and status["code"] == 503, status
            assert "queue budget 1 ms" in status["info"], status
        text = requests.get(srv.url + "/metrics", timeout=10).text
        assert _rejected_overloaded(text, "rest") == len(shed), text
        assert re.search(r'strata_serving_rejected_requests_total\{[^}]*reason="overloaded"[^}]*\} ' + f"{len(shed)}.0",
                         text), text
        assert requests.get(srv.url + "/health/status", timeout=10).status_code == 200  # health is never shed

        done = subprocess.run(
            [str(serving_env), "-m", "workloads.serving.grpc_client", srv.grpc_target, "--parallel", "48"],
            input=json.dumps([{"data": {"ndarray": [ROW]}}]), capture_output=True, text=True, timeout=120,
            cwd=str(serving_env.parents[2]), env={"PYTHONPATH": str(serving_env.parents[2]), "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr[-2000:]
        results = json.loads(done.stdout)
        grpc_codes = [r["grpc_code"] for r in results]
        assert set(grpc_codes) <= {"OK", "UNAVAILABLE"}, grpc_codes
        grpc_shed = [r for r in results if r["grpc_code"] == "UNAVAILABLE"]
        assert grpc_shed, grpc_codes
        for result in grpc_shed:
            assert result["trailers"] == {"retry-after": "1", "strata-reason": "overloaded"}, result
            assert result["details"].startswith("overloaded: waited"), result
        text = requests.get(srv.url + "/metrics", timeout=10).text
        assert _rejected_overloaded(text, "grpc") == len(grpc_shed), text

"""Measure the local proxy: its latency overhead in front of a real Seldon server, and how
long a rollback takes. Bounded (request counts, not durations); loopback only.

    python -m workloads.traffic.measure [--clients 8] [--requests 1500] [--rollbacks 10]

Starts its own state dir, free ports, nginx (through the Supervisor) and two Seldon servers
of a scripted fraud model (champion + challenger), then, in alternating rounds so drift in
machine load hits both sides alike:
- direct: each client keeps one keep-alive connection to the champion's server;
- via proxy: the same requests to ``/fraud/...`` on nginx (a new client connection per
  request, as the proxy answers ``Connection: close``; upstream connections kept alive);
and prints p50/p99 per side and the difference. Rollback: ``apply(all_candidate)`` then
``apply(all_stable)`` ``--rollbacks`` times; prints p50/max of the time until new requests
follow the split, and the wall time of one ``strata rollback`` process.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from workloads.local.supervisor import Supervisor
from workloads.traffic.split import ALIAS_OF_PREDICTOR, PREDICTORS, STABLE, TrafficSplit
from workloads.traffic.state import register_upstream

PATH = "/api/v1.0/predictions"


def _drive(port: int, path: str, body: bytes, clients: int, per_client: int) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    failures: list[str] = []

    def run() -> None:
        conn: http.client.HTTPConnection | None = None
        mine = []
        for _ in range(per_client):
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            mine.append(time.perf_counter() - t0)
            if resp.status != 200:
                failures.append(str(resp.status))
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"{len(failures)} non-200 answers, e.g. {failures[:3]}")
    return latencies


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1500, help="per side, split over rounds and clients")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rollbacks", type=int, default=10)
    args = parser.parse_args(argv)

    from workloads.local.ports import free_port_map
    from workloads.serving.launch import ModelServer, ServerConfig
    from workloads.serving.testing import fraud_schema, make_registry, sample_rows
    from workloads.traffic.local_proxy import LocalProxyRouter

    work = Path(tempfile.mkdtemp(prefix="strata-proxy-measure-"))
    registry = make_registry(work / "registry")
    ports = free_port_map()
    sup = Supervisor(work / "state", ports=ports)
    servers: dict[str, ModelServer] = {}
    try:
        base = ports["model-servers"]
        for index, predictor in enumerate(PREDICTORS):
            http_port = base + index
            servers[predictor] = ModelServer(ServerConfig(
                model="fraud", alias=ALIAS_OF_PREDICTOR[predictor], registry_dir=str(registry), http_port=http_port,
                grpc_port=http_port + 1000, metrics_port=http_port + 2000, predictor=predictor, team="payments-risk",
            ), log_path=work / f"{predictor}.log").start(timeout=180)
            register_upstream(sup.state_dir, "fraud", predictor, http_port)
        sup.up(["proxy"])
        router = LocalProxyRouter(sup.state_dir)
        proxy_port = router.running()[1]
        body = json.dumps({"data": {"ndarray": sample_rows(fraud_schema(), 1, seed=3).tolist()}}).encode()
        per_client = max(1, args.requests // (args.rounds * args.clients))
        _drive(servers[STABLE].config.http_port, PATH, body, args.clients, 20)  # warm both paths
        _drive(proxy_port, "/fraud" + PATH, body, args.clients, 20)
        direct: list[float] = []
        proxied: list[float] = []
        for _ in range(args.rounds):
            direct += _drive(servers[STABLE].config.http_port, PATH, body, args.clients, per_client)
            proxied += _drive(proxy_port, "/fraud" + PATH, body, args.clients, per_client)
        print(f"latency, {args.clients} clients, {len(direct)} requests per side (ms):")
        for name, values in (("direct", direct), ("via proxy", proxied)):
            print(f"  {name:<10} p50 {_pct(values, 0.5):7.2f}  p99 {_pct(values, 0.99):7.2f}")
        print(f"  overhead   p50 {_pct(proxied, 0.5) - _pct(direct, 0.5):+7.2f}  "
              f"p99 {_pct(proxied, 0.99) - _pct(direct, 0.99):+7.2f}")

        switches = []
        for _ in range(args.rollbacks):
            router.apply(TrafficSplit.all_candidate("fraud"))
            router.apply(TrafficSplit.all_stable("fraud"))
            switches.append(router.last_switch_s)
        print(f"rollback (apply all_stable until new requests follow it), {len(switches)} runs: "
              f"p50 {statistics.median(switches) * 1000:.0f} ms, max {max(switches) * 1000:.0f} ms")
        router.apply(TrafficSplit.all_candidate("fraud"))
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "infra.cli", "rollback", "fraud", "--state-dir", str(sup.state_dir)],
                              capture_output=True, text=True, timeout=120)
        print(f"`strata rollback` process: {(time.monotonic() - t0) * 1000:.0f} ms wall; it printed: "
              f"{' '.join(done.stdout.split())}")
        return done.returncode
    finally:
        for server in servers.values():
            server.stop()
        sup.down()


if __name__ == "__main__":
    sys.exit(main())

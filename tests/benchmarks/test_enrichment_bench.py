"""Real-time serving with online enrichment against the same server without it, in one run.

Two Seldon model servers of the same version, same settings (the spec's defaults), on one
core; the REST load generator (closed-loop asyncio clients, tests/benchmarks/test_serving_bench)
on the other, at 8 and 128 clients, interleaved. The baseline's request carries all 20
features as one `jsonData` record; the enriched server's request carries the card and the 17
raw fields, and its 3 card features come from the session's local Redis (one pipelined HMGET
per request). Same layout, same model, same answers: the difference is the lookup. Printed:
requests/s and p99 of each, and enriched/plain ratios. Zero non-2xx other than counted shedding.
"""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest

from tests.benchmarks.test_serving_bench import CONCURRENCY, SECONDS, _cpu_split, _load_average, drive_rest
from tests.features.enrichment import NAMES, SCHEMA, fraud_spec, materialize_rows, request_records
from tests.processes import group_pids

pytestmark = pytest.mark.benchmark_suite


def test_serving_with_vs_without_enrichment(benchmark, tmp_path, local_services):
    import redis
    import requests

    from tests.serving.conftest import free_ports
    from workloads.data.features.repo import enrichment_plan
    from workloads.serving.launch import ModelServer, ServerConfig, serving_python
    from workloads.serving.testing import make_registry, sample_rows
    from workloads.spec import ServerSettings

    if not serving_python().exists():
        pytest.fail("serving environment missing: run workloads/serving/setup-env.sh")
    redis_url = local_services("redis").url("redis")
    root = make_registry(tmp_path / "registry")
    spec = fraud_spec(f"card_profile_{uuid.uuid4().hex[:8]}", on_outage="reject")
    row = sample_rows(SCHEMA, 1, seed=7)
    client = redis.Redis.from_url(redis_url)
    materialize_rows(client, spec, [42], row)
    client.close()
    plain_body, enriched_body = tmp_path / "plain.json", tmp_path / "enriched.json"
    plain_body.write_text(json.dumps({"jsonData": {"instances": [dict(zip(NAMES, map(float, row[0])))]}}))
    enriched_body.write_text(json.dumps({"jsonData": {"instances": request_records([42], row)}}))

    settings = ServerSettings()
    server_cpus, client_cpus = _cpu_split()
    ports = free_ports(6)

    def config(http: int, grpc: int, metrics: int, **extra) -> ServerConfig:
        return ServerConfig(model="fraud", registry_dir=str(root), http_port=http, grpc_port=grpc, metrics_port=metrics,
                            team="bench", workers=settings.workers, threads=settings.threads,
                            grpc_threads=settings.grpc_threads, queue_budget_ms=settings.queue_budget_ms, **extra)

    plain = ModelServer(config(*ports[:3]), log_path=tmp_path / "plain.log")
    enriched = ModelServer(config(*ports[3:], features=enrichment_plan(spec).to_json(), feature_store_url=redis_url),
                           log_path=tmp_path / "enriched.log")
    rows, loads = [], [_load_average()]
    try:
        for server in (plain, enriched):
            server.start(timeout=240)
            for pid in group_pids(server.proc.pid):
                try:
                    os.sched_setaffinity(pid, server_cpus)
                except OSError:
                    pass
        answers = [requests.post(f"{s.url}/api/v1.0/predictions", data=b.read_bytes(),
                                 headers={"Content-Type": "application/json"}, timeout=10).json()
                   for s, b in ((plain, plain_body), (enriched, enriched_body))]
        np.testing.assert_allclose(answers[0]["data"]["ndarray"], answers[1]["data"]["ndarray"],
                                   rtol=1e-6)  # the lookup brought exactly the stored features
        for clients in CONCURRENCY:
            rows.append(("plain", drive_rest(ports[0], plain_body, clients, client_cpus)))
            rows.append(("enriched", drive_rest(ports[3], enriched_body, clients, client_cpus)))
            loads.append(_load_average())
        benchmark.pedantic(lambda: requests.post(f"{enriched.url}/api/v1.0/predictions", data=enriched_body.read_bytes(),
                                                 headers={"Content-Type": "application/json"}, timeout=10),
                           rounds=20, iterations=1)
        lookups = requests.get(f"{enriched.url}/metrics", timeout=10).text
    finally:
        plain.stop()
        enriched.stop()

    print(f"\nreal-time with vs without online enrichment, 1-record jsonData; servers on cpu {sorted(server_cpus)}, "
          f"clients on cpu {sorted(client_cpus)}; {SECONDS:.0f}s per point; load before/after: {' | '.join(loads)}")
    print(f"{'server':>9} {'clients':>8} {'ok/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'shed':>6} {'other':>6}")
    for name, r in rows:
        print(f"{name:>9} {r['clients']:>8} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['shed']:>6} {r['other_errors']:>6}")
    by = {(name, r["clients"]): r for name, r in rows}
    for clients in CONCURRENCY:
        ours, base = by[("enriched", clients)], by[("plain", clients)]
        rps_ratio, p99_ratio = ours["rps"] / base["rps"], ours["p99_ms"] / base["p99_ms"]
        print(f"{clients:>4} clients: enriched/plain throughput {rps_ratio:.2f}x, p99 {p99_ratio:.2f}x "
              f"({ours['p99_ms']:.1f} ms vs {base['p99_ms']:.1f} ms)")
        benchmark.extra_info[f"rps_ratio_{clients}"] = round(rps_ratio, 3)
        benchmark.extra_info[f"p99_ratio_{clients}"] = round(p99_ratio, 3)
    hits = sum(float(line.rsplit(" ", 1)[1]) for line in lookups.splitlines()
               if line.startswith("strata_feature_lookups_total{") and 'outcome="hit"' in line)
    print(f"online lookups served from Redis (strata_feature_lookups_total{{outcome=\"hit\"}}): {hits:.0f}")
    for name, r in rows:
        assert r["other_errors"] == 0 and r["ok"] > 0, (name, r)
    assert hits >= by[("enriched", CONCURRENCY[0])]["ok"]  # every enriched answer looked its card up

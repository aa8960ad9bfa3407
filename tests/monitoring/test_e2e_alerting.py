"""End to end on real processes, all on 127.0.0.1 with temp dirs:

drift monitor (prometheus-client /metrics) <- Prometheus (1s scrape/eval, generated rules
with short `for:`) -> Alertmanager (generated config, PagerDuty url and routing-key files
pointed at loopback) -> a local PagerDuty Events v2 receiver + the retraining trigger,
whose action (a real command) must run exactly once. Prints injection-to-page seconds.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from tests.monitoring.conftest import (PYTHON, RETRAIN_TOKEN, free_port, need, retrain_trigger_argv, wait_http,
                                      write_fast_alerting, wait_until)
from workloads.monitoring import rules
from workloads.data.profile import build_profile, write_profile

FEATURES = ("amount", "hour", "merchant_risk", "distance_km")


def _post(url: str, body: object, headers: dict | None = None) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class PagerDutyReceiver:
    """A loopback stand-in for PagerDuty's Events API v2 (`POST /v2/enqueue`)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.events.append((time.monotonic(), body))
                reply = json.dumps({"status": "success", "message": "Event processed", "dedup_key": body.get("dedup_key")}).encode()
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()




def test_injected_drift_pages_and_starts_exactly_one_retrain(tmp_path, processes, catalog):
    prometheus, alertmanager = need("prometheus"), need("prometheus-alertmanager")
    fraud = next(spec for spec in catalog if spec.name == "fraud")
    rng = np.random.default_rng(5)

    # Reference profile of "version 3", as training ships it (reference_profile.json).
    reference = rng.normal(size=(20_000, len(FEATURES)))
    profile_path = write_profile(build_profile(reference, list(FEATURES), predictions=rng.uniform(size=20_000)),
                                 tmp_path / "reference_profile.json")

    drift_port, retrain_port, prom_port, am_port = free_port(), free_port(), free_port(), free_port()
    pagerduty = PagerDutyReceiver()
    try:
        # The drift monitor (a real process exporting the contract's metrics).
        drift = processes.start("drift", [PYTHON, "-m", "workloads.monitoring.drift_service", "--model", "fraud",
                                          "--version", "3", "--team", fraud.team, "--profile", str(profile_path),
                                          "--port", str(drift_port), "--interval", "0.5", "--min-rows", "1000",
                                          "--window-rows", "5000"])
        # The retraining trigger; its action is a real command that records each start.
        marker = tmp_path / "retrains.log"
        action = f"{PYTHON} -c \"import sys,time; open(sys.argv[1],'a').write(sys.argv[2]+'\\n'); time.sleep(3)\" {marker} {{model}}"
        retrain_argv, retrain_env = retrain_trigger_argv(retrain_port, action, catalog)
        retrain = processes.start("retrain", retrain_argv, env=retrain_env)

        # Generated rules (drift `for:` shortened) and Alertmanager config (loopback endpoints).
        am_file, prom_file = write_fast_alerting(
            tmp_path, catalog, key_prefix="test-key-", pagerduty_url=f"http://127.0.0.1:{pagerduty.port}/v2/enqueue",
            retrain_url=f"http://127.0.0.1:{retrain_port}/v1/alertmanager", alertmanager_port=am_port,
            scrape_targets={"drift": f"127.0.0.1:{drift_port}"})
        am_proc = processes.start("alertmanager", [
            alertmanager, f"--config.file={am_file}", f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=", "--log.level=warn"])
        prom_proc = processes.start("prometheus", [
            prometheus, f"--config.file={prom_file}", f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"])
        wait_http(f"http://127.0.0.1:{drift_port}/healthz", 30, drift)
        wait_http(f"http://127.0.0.1:{retrain_port}/healthz", 30, retrain)
        wait_http(f"http://127.0.0.1:{am_port}/-/ready", 60, am_proc)
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready", 60, prom_proc)
        query = f"http://127.0.0.1:{prom_port}/api/v1/query?query="

        def prom(expr: str) -> list:
            return _get(query + urllib.parse.quote(expr))["data"]["result"]

        # Phase 1: live data like the reference -> drift metrics scraped, nothing fires.
        observe = f"http://127.0.0.1:{drift_port}/v1/observe"
        _post(observe, {"rows": rng.normal(size=(4000, len(FEATURES))).tolist(),
                        "predictions": rng.uniform(size=4000).tolist()})
        wait_until(lambda: prom('strata_drift_feature_psi{model="fraud"}'), 30, "drift metrics in Prometheus")
        time.sleep(3)  # > for: (2s) + eval interval
        assert prom('ALERTS{alertname=~"ModelFeatureDrift|ModelFeatureKSDrift"}') == []
        assert pagerduty.events == []

        # Phase 2: inject drift into two features (the window is replaced: 5000 rows max).
        shifted = rng.normal(size=(5000, len(FEATURES)))
        shifted[:, 0] += 1.0
        shifted[:, 2] *= 2.5
        injected = time.monotonic()
        _post(observe, {"rows": shifted.tolist(), "predictions": rng.uniform(size=5000).tolist()})

        def drift_page():
            for at, event in pagerduty.events:
                details = event.get("payload", {}).get("custom_details", {})
                if details.get("alertname") == "ModelFeatureDrift" and event.get("event_action") == "trigger":
                    return at, event
            return None

        paged_at, event = wait_until(drift_page, 60, "the ModelFeatureDrift PagerDuty event")
        print(f"\ninjection-to-page: {paged_at - injected:.2f} s "
              f"(scrape 1s, eval 1s, for 2s, group_wait 1s; production: for {fraud.drift.sustained_for})")

        # The PagerDuty Events v2 payload.
        assert event["routing_key"] == f"test-key-{fraud.pagerduty.routing_key_name}"
        assert event["payload"]["severity"] == "warning"  # ticket: low urgency
        assert event["payload"]["summary"].startswith("[ticket] ModelFeatureDrift (fraud)")
        assert event["payload"]["custom_details"]["team"] == fraud.team
        assert event["payload"]["custom_details"]["runbook_url"] == rules.runbook_url("ModelFeatureDrift")
        assert event["dedup_key"]
        assert any(link["href"] == rules.runbook_url("ModelFeatureDrift") for link in event.get("links", []))

        # Exactly one retrain, however many notifications arrive.
        wait_until(lambda: marker.exists() and marker.read_text().strip(), 30, "the retrain command to run")
        status = wait_until(lambda: _get(f"http://127.0.0.1:{retrain_port}/v1/retrains").get("fraud"), 10, "retrain status")
        assert "ModelFeatureDrift" in status["last_reason"]
        duplicate = {"version": "4", "status": "firing", "alerts": [
            {"status": "firing", "labels": {"alertname": "ModelFeatureDrift", "model": "fraud", "team": fraud.team, "retrain": "true"}}]}
        # (Alertmanager itself authenticated with the token file; a direct caller needs it too)
        assert _post(f"http://127.0.0.1:{retrain_port}/v1/alertmanager", duplicate,
                     {"Authorization": f"Bearer {RETRAIN_TOKEN}"})["models"]["fraud"] in ("already_running", "cooldown")
        time.sleep(5)  # further group updates (KS alerts join, the retrain command finishes)
        assert marker.read_text().split() == ["fraud"]
        final = _get(f"http://127.0.0.1:{retrain_port}/v1/retrains")["fraud"]
        assert final["started"] == 1 and final["running"] is False and final["last_exit_code"] == 0

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{retrain_port}/metrics", timeout=5).read().decode()
        assert 'strata_retrain_triggers_total{model="fraud",outcome="started",team="payments-risk"} 1.0' in metrics
    except Exception:
        for name in ("prometheus", "alertmanager", "drift", "retrain"):
            print(f"--- {name} log ---\n{processes.log(name)}")
        raise
    finally:
        pagerduty.close()

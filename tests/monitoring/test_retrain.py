"""The retraining trigger: one retrain per model at a time, cooldown, webhook contract."""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request

import pytest

from workloads.monitoring.retrain import safe_name
from workloads.monitoring.retrain import CommandAction, RetrainRequest, RetrainTrigger, serve


def _alert(model="fraud", retrain="true", status="firing", alertname="ModelFeatureDrift"):
    return {"status": status, "labels": {"alertname": alertname, "model": model, "team": "payments-risk", "retrain": retrain}}


def test_one_retrain_per_model_at_a_time_then_cooldown():
    release, calls = threading.Event(), []
    now = [1000.0]

    def action(request: RetrainRequest) -> int:
        calls.append(request.model)
        release.wait(5)
        return 0

    trigger = RetrainTrigger(action, cooldown_s=60, clock=lambda: now[0])
    assert trigger.request(RetrainRequest("fraud", "payments-risk", "ModelFeatureDrift")) == "started"
    assert trigger.request(RetrainRequest("fraud", "payments-risk", "ModelFeatureDrift")) == "already_running"
    assert trigger.request(RetrainRequest("digits", "vision", "ModelQualityDegraded")) == "started"
    release.set()
    trigger.join(5)
    assert trigger.request(RetrainRequest("fraud", "payments-risk", "x")) == "cooldown"
    now[0] += 61
    assert trigger.request(RetrainRequest("fraud", "payments-risk", "x")) == "started"
    trigger.join(5)
    assert sorted(calls) == ["digits", "fraud", "fraud"]


def test_webhook_payload_groups_by_model_and_ignores_others():
    started = []
    trigger = RetrainTrigger(lambda r: started.append((r.model, r.reason)) or 0, cooldown_s=0)
    result = trigger.handle_alertmanager({"version": "4", "alerts": [
        _alert(), _alert(alertname="ModelQualityDegraded"), _alert(model="digits", retrain="false"),
        _alert(model="digits", status="resolved")]})
    trigger.join(5)
    assert result == {"models": {"fraud": "started"}, "ignored": 2, "unknown_models": 0}
    assert started == [("fraud", "ModelFeatureDrift,ModelQualityDegraded")]
    with pytest.raises(ValueError, match="alerts"):
        trigger.handle_alertmanager({"nope": 1})


def test_failed_action_is_recorded_and_the_state_survives_restarts(tmp_path):
    state = tmp_path / "state.json"
    trigger = RetrainTrigger(lambda r: 3, cooldown_s=3600, state_file=state)
    assert trigger.request(RetrainRequest("fraud", "t", "r")) == "started"
    trigger.join(5)
    assert trigger.status()["fraud"]["last_exit_code"] == 3
    again = RetrainTrigger(lambda r: 0, cooldown_s=3600, state_file=state)
    assert again.request(RetrainRequest("fraud", "t", "r")) == "cooldown"


def test_command_action_substitutes_and_runs(tmp_path):
    out = tmp_path / "out.txt"
    action = CommandAction([sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", str(out), "{model}:{reason}"])
    assert action(RetrainRequest("fraud", "payments-risk", "ModelFeatureDrift")) == 0
    assert out.read_text() == "fraud:ModelFeatureDrift"


def test_http_contract():
    trigger = RetrainTrigger(lambda r: 0, cooldown_s=3600)
    server = serve(trigger, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        def post(body: bytes) -> tuple[int, dict]:
            request = urllib.request.Request(f"{base}/v1/alertmanager", body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        assert post(b"{not json")[0] == 400
        assert post(b'{"alerts": [{"status": "firing"}]}') == (400, {"error": "every alert needs a `labels` object"})
        assert post(json.dumps({"alerts": [_alert()]}).encode()) == (
            200, {"models": {"fraud": "started"}, "ignored": 0, "unknown_models": 0})
        assert post(json.dumps({"alerts": [_alert()]}).encode())[1]["models"]["fraud"] in ("already_running", "cooldown")
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert "strata_retrain_triggers_total" in text and "strata_retrain_runs_in_progress" in text
    finally:
        server.shutdown()


def _post(base: str, body: bytes, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{base}/v1/alertmanager", body, {"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_webhook_needs_the_bearer_token_and_knows_its_models(tmp_path):
    """Issue 12 item 5: authenticated callers only; only known models; no request label in a path."""
    started = []
    trigger = RetrainTrigger(lambda r: started.append(r.model) or 0, cooldown_s=3600, known_models=["fraud"])
    server = serve(trigger, "127.0.0.1", 0, token="s3cret-token")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    body = json.dumps({"alerts": [_alert(), {**_alert(), "labels": {**_alert()["labels"], "model": "../../etc"}}]}).encode()
    try:
        assert _post(base, body, {})[0] == 401
        assert _post(base, body, {"Authorization": "Bearer wrong"})[0] == 401
        code, reply = _post(base, body, {"Authorization": "Bearer s3cret-token"})
        assert code == 200 and reply["models"] == {"fraud": "started"} and reply["unknown_models"] == 1
        trigger.join(5)
        assert started == ["fraud"]
    finally:
        server.shutdown()
    with pytest.raises(ValueError, match="not a DNS label"):
        safe_name("../../etc")


def test_the_trigger_refuses_to_start_without_a_token(tmp_path):
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "STRATA_RETRAIN_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "workloads.monitoring.retrain", "--port", "0", "--command", "true",
                             "--models", "fraud"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "STRATA_RETRAIN_TOKEN is not set" in result.stderr

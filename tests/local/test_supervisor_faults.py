"""Supervisor faults with their own state dirs and ports: a dead service, a taken port,
missing dependencies, PID reuse, a later registry entry, and `down` leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from workloads.local import (
    ConfigError,
    HttpHealth,
    LocalOptions,
    MissingDependencyError,
    PortInUseError,
    Requirement,
    ServiceSpec,
    Supervisor,
    default_registry,
    kafka_setup,
    resolve_ports,
)
from workloads.local.process import ProcessRecord, group_members, proc_stat
from workloads.local.ports import free_port_map


@pytest.fixture
def sup(tmp_path):
    s = Supervisor(tmp_path / "state", ports=free_port_map())
    yield s
    s.down()


def _cli(sup: Supervisor, *args: str) -> subprocess.CompletedProcess:
    ports = [f"--port={k}={v}" for k, v in sup.ports.items()] if args[0] == "up" else []
    return subprocess.run([sys.executable, "-m", "workloads.local", *args, "--state-dir", str(sup.state_dir), *ports],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})


def _listening_ports() -> set[int]:
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
    return {int(ln.split()[3].rsplit(":", 1)[1]) for ln in out.splitlines() if ln.strip()}


def test_killed_service_is_reported_dead_and_restarted(sup):
    sup.up(["pagerduty"])
    rec = sup.record("pagerduty")
    os.killpg(rec.pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while sup.service_status("pagerduty").state != "dead" and time.monotonic() < deadline:
        time.sleep(0.1)
    st = sup.service_status("pagerduty")
    assert st.state == "dead" and str(rec.pid) in st.detail
    res = _cli(sup, "status", "pagerduty")
    assert res.returncode == 1
    assert "dead" in res.stdout and "pagerduty died" in res.stdout and "strata local up pagerduty" in res.stdout
    # `up` cleans the dead record and starts a fresh process.
    sup.up(["pagerduty"])
    assert sup.service_status("pagerduty").state == "running"
    assert sup.record("pagerduty").pid != rec.pid


def test_taken_port_gives_clear_error(sup):
    port = sup.ports["pagerduty"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(PortInUseError) as exc:
            sup.up(["pagerduty"])
        msg = str(exc.value)
        assert f"port {port}" in msg and "'pagerduty'" in msg
        assert f"pid {os.getpid()}" in msg  # who holds it, from ss -ltnp
        assert "--port pagerduty=" in msg and "STRATA_PORT_PAGERDUTY" in msg
        assert sup.record("pagerduty") is None  # nothing started, nothing recorded
        res = _cli(sup, "up", "pagerduty")
        assert res.returncode == 2
        assert f"port {port}" in res.stderr and "already taken" in res.stderr


def test_missing_dependencies_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    s = Supervisor(tmp_path / "state", ports=free_port_map())
    for service, needle in (("kafka", "openjdk-17"), ("prometheus", "apt-get install -y --no-install-recommends prometheus"),
                            ("alertmanager", "prometheus-alertmanager")):
        with pytest.raises(MissingDependencyError) as exc:
            s.up([service])
        assert f"service '{service}' needs" in str(exc.value) and needle in str(exc.value)
    # All of them at once, in one message.
    with pytest.raises(MissingDependencyError) as exc:
        s.up(["kafka", "prometheus"])
    assert [m[0] for m in exc.value.missing] == ["kafka", "alertmanager", "prometheus"]
    assert not list((s.state_dir / "run").glob("*.json"))  # failed fast: nothing started
    # Maven is only needed while the jars are not cached.
    with pytest.raises(MissingDependencyError) as exc:
        kafka_setup.ensure_jars(tmp_path / "empty-cache")
    assert "mvn" in str(exc.value) and "apt-get install -y --no-install-recommends maven" in str(exc.value)


def test_bad_port_overrides_are_config_errors():
    with pytest.raises(ConfigError, match="unknown port key 'kafak'"):
        resolve_ports({"kafak": 20000})
    with pytest.raises(ConfigError, match="STRATA_PORT_KAFKA"):
        resolve_ports(env={"STRATA_PORT_KAFKA": "ninety"})
    with pytest.raises(ConfigError, match="both set to 19090"):
        resolve_ports({"kafka": 19090})
    with pytest.raises(ConfigError, match="no such file"):
        LocalOptions(prometheus_config=Path("/nonexistent/prometheus.yml")).check()


def test_reused_pid_is_never_signalled(sup):
    """A PID file whose PID now belongs to another process: reported dead, not killed."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        st = proc_stat(other.pid)
        forged = ProcessRecord(service="pagerduty", pid=other.pid, pgid=other.pid, start_ticks=st[3] - 1,
                               boot_id="", command=["x"], ports={"pagerduty": sup.ports["pagerduty"]},
                               log=str(sup.log_path("pagerduty")), started_at=time.time())
        forged.save(sup.state_dir / "run" / "pagerduty.json")
        assert sup.service_status("pagerduty").state == "dead"
        assert sup.down() == ["pagerduty"]
        assert other.poll() is None  # still running: not ours
    finally:
        other.kill()
        other.wait()


def test_registry_takes_new_services(tmp_path):
    """Later workloads are more entries: command + env + port + health + dependencies."""
    registry = default_registry()
    registry.add(ServiceSpec(
        name="drift-monitor", description="stand-in drift monitor (stdlib http.server)",
        ports=("drift-monitor",),
        command=lambda ctx: [ctx.python, "-m", "http.server", str(ctx.port("drift-monitor")), "--bind", "127.0.0.1"],
        health=HttpHealth("drift-monitor", "/"),
        env=lambda ctx: {"STRATA_PAGERDUTY_URL": f"http://127.0.0.1:{ctx.port('pagerduty')}/v2/enqueue"},
        depends_on=("pagerduty",),
        requires=(Requirement("python", "apt-get install python3", binaries=(sys.executable,)),),
        metrics_path="/",
        start_timeout_s=20,
    ))
    s = Supervisor(tmp_path / "state", ports=free_port_map(), registry=registry)
    try:
        statuses = s.up(["drift-monitor"])
        assert [(x.name, x.state) for x in statuses] == [("pagerduty", "running"), ("drift-monitor", "running")]
        assert (s.state_dir / "config/prometheus/targets/drift-monitor.json").exists()
        env = Path(f"/proc/{s.record('drift-monitor').pid}/environ").read_bytes().split(b"\0")
        assert f"STRATA_PAGERDUTY_URL=http://127.0.0.1:{s.ports['pagerduty']}/v2/enqueue".encode() in env
    finally:
        assert sorted(s.down()) == ["drift-monitor", "pagerduty"]


def test_down_leaves_no_process_and_no_listening_port(tmp_path):
    s = Supervisor(tmp_path / "state", ports=free_port_map())
    services = ["kafka", "prometheus", "alertmanager", "pagerduty"]
    try:
        statuses = s.up(services)
        assert {x.name: x.state for x in statuses} == {n: "running" for n in services}
        groups = {n: s.record(n).pgid for n in services}
        pids = {n: group_members(g) for n, g in groups.items()}
        ports = {p for x in statuses for p in x.ports.values()}
        assert all(pids.values()) and ports <= _listening_ports()
    finally:
        res = _cli(s, "down")
    assert res.returncode == 0, res.stdout + res.stderr
    for name, members in pids.items():
        for pid in members:
            st = proc_stat(pid)
            assert st is None or st[0] == "Z", f"{name}: pid {pid} still running"
        assert group_members(groups[name]) == []
    assert not (ports & _listening_ports()), ports & _listening_ports()
    assert not list((s.state_dir / "run").glob("*.json"))
    assert _cli(s, "status", "--json").returncode == 0


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=15) as resp:
        return json.loads(resp.read())


def test_prometheus_takes_rule_files_and_config_paths(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n- name: strata-local-test\n  rules:\n"
                     "  - alert: StrataLocalAlwaysFiring\n    expr: vector(1)\n    labels: {severity: critical}\n")
    ports = free_port_map()
    s = Supervisor(tmp_path / "a", ports=ports, options=LocalOptions(rule_files=(rules,)))
    try:
        s.up(["prometheus"])
        base = f"http://127.0.0.1:{ports['prometheus']}"
        groups = _json(base + "/api/v1/rules")["data"]["groups"]
        assert [g["name"] for g in groups] == ["strata-local-test"]
    finally:
        s.down()
    # A complete prometheus.yml given by path is used as is.
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global: {scrape_interval: 5s}\nscrape_configs:\n- job_name: given-by-path\n"
                   f"  static_configs: [{{targets: ['127.0.0.1:{ports['prometheus']}']}}]\n")
    s = Supervisor(tmp_path / "b", ports=ports, options=LocalOptions(prometheus_config=cfg))
    try:
        s.up(["prometheus"])
        assert "given-by-path" in _json(f"http://127.0.0.1:{ports['prometheus']}/api/v1/status/config")["data"]["yaml"]
    finally:
        s.down()


def test_dying_workload_service_is_reported_by_status(tmp_path):
    """A workload entry of the default registry (the fraud drift monitor, a real
    drift_service process on the champion's reference profile) that dies is `dead` in
    `status`, with its PID and log, and `status` exits 1 naming it."""
    from workloads.serving.testing import make_registry

    s = Supervisor(tmp_path / "state", ports=free_port_map())
    make_registry(s.state_dir / "registry", "fraud", ("1",))
    try:
        statuses = s.up(["fraud-drift"])
        # the catalogue's edge drift -> MLflow (the cluster's profile download) starts MLflow
        # first, and MLflow's artifact store (the local S3) before it
        assert [(x.name, x.state) for x in statuses] == [("s3", "running"), ("mlflow", "running"),
                                                          ("fraud-drift", "running")]
        rec = s.record("fraud-drift")
        assert (s.state_dir / "config/prometheus/targets/fraud-drift.json").exists()
        os.killpg(rec.pgid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while s.service_status("fraud-drift").state != "dead" and time.monotonic() < deadline:
            time.sleep(0.1)
        st = s.service_status("fraud-drift")
        assert st.state == "dead" and str(rec.pid) in st.detail
        res = _cli(s, "status", "fraud-drift")
        assert res.returncode == 1
        assert "fraud-drift died" in res.stdout and "strata local up fraud-drift" in res.stdout
    finally:
        s.down()


def test_workload_service_without_a_registered_model_says_how_to_get_one(tmp_path):
    s = Supervisor(tmp_path / "state", ports=free_port_map())
    try:
        with pytest.raises(ConfigError, match=r"(?s)fraud@champion.*strata train fraud --local"):
            s.up(["fraud-drift"])
        assert s.record("fraud-drift") is None
    finally:
        s.down()  # its dependency (MLflow) did start


def _post_alert(sup: Supervisor, labels: dict) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{sup.port('alertmanager')}/api/v2/alerts",
                                     data=json.dumps([{"labels": labels, "annotations": {"summary": labels["alertname"]}}]).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=15) as resp:
        assert resp.status == 200


def _pages_of(sup: Supervisor, alertname: str, deadline_s: float) -> list[dict]:
    """The trigger events the local PagerDuty receiver got for `alertname`, waiting up to `deadline_s`
    for at least one more than there were."""
    def read() -> list[dict]:
        path = sup.pagerduty_events_file
        events = [json.loads(ln)["event"] for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
        return [e for e in events if e["event_action"] == "trigger" and alertname in e["payload"]["summary"]]

    before, deadline = len(read()), time.monotonic() + deadline_s
    while len(read()) == before and time.monotonic() < deadline:
        time.sleep(0.5)
    return read()


def test_an_alert_still_firing_across_down_and_up_pages_again(tmp_path):
    """Issue 12 item 14: a re-run (the demo's drift page) must page again after `down`/`up` on the
    same state dir, although its group was notified by the last run within `repeat_interval` (1h)."""
    s = Supervisor(tmp_path / "state", ports=free_port_map())
    labels = {"alertname": f"StrataRerun{os.getpid()}", "severity": "critical", "model": "fraud"}
    try:
        s.up(["alertmanager", "pagerduty"])
        _post_alert(s, labels)
        assert len(_pages_of(s, labels["alertname"], 60)) == 1
        s.down()
        s.up(["alertmanager", "pagerduty"])
        _post_alert(s, labels)  # the same alert, still firing: what the previous demo left behind
        assert len(_pages_of(s, labels["alertname"], 60)) == 2, "the re-run's alert was not notified again"
    finally:
        s.down()



def _query(sup: Supervisor, promql: str, at: float | None = None) -> list[dict]:
    params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
    with urllib.request.urlopen(f"{sup.url('prometheus')}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=15) as resp:
        return json.loads(resp.read())["data"]["result"]


def test_down_leaves_no_live_series_for_the_next_up_to_alert_on(tmp_path):
    """Issue 12 item 14: `down` stops Prometheus after the services it scrapes and only once their
    series are stale. Otherwise their last samples (the demo's drift gauges) stay within the query
    lookback (5 min) after the next `up` on the same TSDB, and the previous run's alerts fire at once:
    a re-run paged drift 15 s after start and retrained before its own drift was injected."""
    s = Supervisor(tmp_path / "state", ports=free_port_map())
    scraped = 'up{service=~"pagerduty|alertmanager"} == 1'
    try:
        s.up(["prometheus"])  # with what it scrapes: alertmanager and the local PagerDuty receiver
        deadline = time.monotonic() + 60
        while len(_query(s, scraped)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(_query(s, scraped)) == 2, _query(s, "up")
        s.down()
        gone = time.time()
        s.up(["prometheus"])  # the same state dir: the same TSDB
        # the history is kept (a range over the last run sees its samples) ...
        assert _query(s, 'count_over_time(up{service="pagerduty"}[10m])', at=gone), "the TSDB was not kept"
        # ... but at the moment `down` ended no series of a stopped service is live any more
        assert _query(s, '{service=~"pagerduty|alertmanager"}', at=gone) == []
    finally:
        s.down()

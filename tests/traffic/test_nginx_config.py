"""The generated nginx config, checked by nginx itself (`nginx -t`) for every shape of split."""

from __future__ import annotations

import json
import re

import pytest

from workloads.traffic.local_proxy import ProxyConfigError, effective_routes, layout, write_config
from workloads.traffic.split import CANDIDATE, STABLE, TrafficSplit
from workloads.traffic.state import read_upstreams, register_upstream, upstreams_file

SPLITS = {
    "all-stable": TrafficSplit.all_stable("fraud-risk"),
    "one-percent": TrafficSplit.weighted("fraud-risk", 1),
    "ninety-nine": TrafficSplit.weighted("fraud-risk", 99),
    "blue-green": TrafficSplit.all_candidate("fraud-risk"),
    "shadow": TrafficSplit.mirrored("fraud-risk"),
}


@pytest.mark.parametrize("shape", SPLITS)
def test_every_split_renders_a_config_nginx_accepts(tmp_path, shape):
    register_upstream(tmp_path, "fraud-risk", STABLE, 21001)
    register_upstream(tmp_path, "fraud-risk", CANDIDATE, 21002)
    register_upstream(tmp_path, "digits", STABLE, 21003)  # no candidate: always all stable
    split = SPLITS[shape]
    conf, generation = write_config(tmp_path, 21000, {"fraud-risk": split})  # raises if nginx -t fails
    text = conf.read_text()
    assert f"generation {generation}" in text and "daemon off;" in text
    assert "listen 127.0.0.1:21000;" in text
    assert str(tmp_path) in text and "/var/" not in text and "/etc/" not in text  # nothing outside the state dir
    assert ("mirror /_strata_mirror/fraud-risk;" in text) is split.shadow
    if 0 < split.candidate_weight < 100:
        assert re.search(rf"split_clients \$strata_split_key \$strata_arm_fraud_risk {{\s+{split.candidate_weight}% candidate;", text)
    assert "$strata_arm_digits { default stable; }" in text
    health = json.loads(re.search(r"location = /_strata/health \{ access_log off; return 200 '(.*)'; \}", text).group(1))
    assert health["models"] == {"digits": "digits: 100% stable / 0% candidate", "fraud-risk": split.describe()}


def test_a_split_for_an_unregistered_candidate_falls_back_to_stable(tmp_path):
    register_upstream(tmp_path, "fraud", STABLE, 21001)
    (route,) = effective_routes(tmp_path, {"fraud": TrafficSplit.weighted("fraud", 30)})
    assert route.candidate is None and route.split == TrafficSplit.all_stable("fraud")


def test_a_config_nginx_rejects_is_not_installed(tmp_path):
    register_upstream(tmp_path, "fraud", STABLE, 21001)
    conf, _ = write_config(tmp_path, 21000)
    good = conf.read_text()
    data = json.loads(upstreams_file(tmp_path).read_text())
    data["models"]["fraud"]["stable"] = "no-such-host.invalid:21001"  # nginx -t resolves upstream hosts
    upstreams_file(tmp_path).write_text(json.dumps(data))
    assert read_upstreams(tmp_path)["fraud"][STABLE].startswith("no-such-host")
    with pytest.raises(ProxyConfigError, match="nginx rejected the generated config"):
        write_config(tmp_path, 21000)
    assert conf.read_text() == good
    assert layout(tmp_path).conf == conf


@pytest.mark.parametrize("shape", SPLITS)
def test_grpc_routes_render_for_every_split_and_nginx_accepts_them(tmp_path, shape):
    register_upstream(tmp_path, "fraud-risk", STABLE, 21001, grpc_port=22001)
    register_upstream(tmp_path, "fraud-risk", CANDIDATE, 21002, grpc_port=22002)
    register_upstream(tmp_path, "digits", STABLE, 21003)  # REST only: no gRPC route
    conf, _ = write_config(tmp_path, 21000, {"fraud-risk": SPLITS[shape]}, grpc_port=21009)  # raises if nginx -t fails
    text = conf.read_text()
    assert "listen 127.0.0.1:21009 http2;" in text
    assert "fraud-risk strata_grpc_fraud_risk_$strata_arm_fraud_risk;" in text  # the REST split's draw
    assert "server 127.0.0.1:22002 max_fails=0;" in text
    assert "digits strata_grpc" not in text and "routed: fraud-risk'" in text


def test_grpc_registrations_follow_their_server(tmp_path):
    from workloads.traffic.state import TrafficError, read_grpc_upstreams, unregister_upstream

    register_upstream(tmp_path, "fraud", STABLE, 21001, grpc_port=22001)
    register_upstream(tmp_path, "fraud", CANDIDATE, 21002, grpc_port=22002)
    assert read_grpc_upstreams(tmp_path) == {"fraud": {STABLE: "127.0.0.1:22001", CANDIDATE: "127.0.0.1:22002"}}
    # re-registered without gRPC: the old gRPC port is forgotten, and a candidate without gRPC unroutes gRPC
    register_upstream(tmp_path, "fraud", CANDIDATE, 21004)
    assert read_grpc_upstreams(tmp_path) == {"fraud": {STABLE: "127.0.0.1:22001"}}
    (route,) = effective_routes(tmp_path, {"fraud": TrafficSplit.weighted("fraud", 30)})
    assert route.grpc_stable == "127.0.0.1:22001" and not route.grpc_routed
    unregister_upstream(tmp_path, "fraud")
    assert read_grpc_upstreams(tmp_path) == {} and read_upstreams(tmp_path) == {}
    data = {"models": {}, "grpc": {"fraud": {"stable": "nowhere"}}}
    upstreams_file(tmp_path).write_text(json.dumps(data))
    with pytest.raises(TrafficError, match=r"grpc\.fraud\.stable: 'nowhere' is not host:port"):
        read_grpc_upstreams(tmp_path)

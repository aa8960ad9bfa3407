"""Rules and panels over an absent emitter are not shipped (workloads.monitoring.shipping)."""

from workloads.monitoring import dashboards as dash
from workloads.monitoring.generate import load_catalog
from workloads.monitoring.metrics import Emitter
from workloads.monitoring.rules import RuleOptions, alert_names, recorded_names, rule_groups
from workloads.monitoring.shipping import emitters_read, ship_dashboard, ship_rules

ALL = set(Emitter)


def test_every_emitter_ships_everything():
    groups = rule_groups(load_catalog(), RuleOptions())
    assert ship_rules(groups, ALL) == groups


def test_without_training_no_training_alert_and_no_training_panel():
    groups = ship_rules(rule_groups(load_catalog(), RuleOptions()), ALL - {Emitter.TRAINING})
    assert "TrainingJobFailed" not in alert_names(groups)
    for group in groups["groups"]:
        for rule in group["rules"]:
            assert Emitter.TRAINING not in emitters_read(rule["expr"])
    training = dash.dashboards(load_catalog())["strata-training.json"]
    shipped = ship_dashboard(training, ALL - {Emitter.TRAINING})
    assert shipped is not None and len(shipped["panels"]) < len(training["panels"])  # the retrain panels stay
    assert not [t for p in shipped["panels"] for t in p.get("targets", []) if Emitter.TRAINING in emitters_read(t["expr"])]
    streaming = dash.dashboards(load_catalog())["strata-streaming.json"]
    assert ship_dashboard(streaming, ALL - {Emitter.STREAMING}) is None  # nothing left to show


def test_a_dropped_recording_drops_the_alerts_reading_it():
    groups = rule_groups(load_catalog(), RuleOptions())
    without = ship_rules(groups, ALL - {Emitter.SERVING})
    assert not [r for r in recorded_names(without) if "serving" in r]
    text = str(without)
    assert not [r for r in recorded_names(groups) if "serving" in r and r in text]

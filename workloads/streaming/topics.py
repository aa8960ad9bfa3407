"""Topic names of a model's stream (one place; the infra layer's KafkaTopics use the same)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    input: str
    output: str
    dead_letter: str

    def all(self) -> tuple[str, str, str]:
        return (self.input, self.output, self.dead_letter)


def topics_for(model: str) -> Topics:
    """`strata.<model>.input` -> `strata.<model>.scored`, bad records -> `strata.<model>.dlq`."""
    return Topics(f"strata.{model}.input", f"strata.{model}.scored", f"strata.{model}.dlq")


def labels_topic_for(model: str) -> str:
    """`strata.<model>.labels`: delayed ground truth, keyed like the scored records it labels
    (value `{"label": 1}`); the quality service joins the two (workloads.monitoring.quality)."""
    return f"strata.{model}.labels"

"""The plan harness's shortcuts around Pulumi's mock runtime give what the SDK's own path gives."""

from __future__ import annotations

import asyncio

import pytest
from pulumi.runtime import rpc
from pulumi.runtime.sync_await import _sync_await

from infra.plan.harness import _InlineExecutor, _outputs_struct


def test_plain_outputs_are_written_as_the_sdk_serialiser_writes_them():
    state = {
        "metadata": {"name": "fraud", "labels": {"team": "risk"}, "annotations": None},
        "spec": {"replicas": 3, "ratio": 0.25, "paused": False, "ports": [{"port": 9000}, {"port": 6000}]},
        "status": None,
        "arn": "arn:aws:mock:::fraud",
        "tags": [],
    }
    assert _outputs_struct(state) == _sync_await(rpc.serialize_properties(state, {}))
    assert "status" not in _outputs_struct(state)  # top-level None: left out, as Pulumi does


def test_outputs_that_are_not_plain_data_go_through_the_sdk_serialiser():
    from pulumi import FileAsset

    state = {"source": FileAsset(__file__), "name": "bundle"}
    struct = _outputs_struct(state)
    assert struct == _sync_await(rpc.serialize_properties(state, {}))
    assert struct["source"]["path"] == __file__


def test_inline_executor_hands_results_and_errors_to_the_awaiting_task():
    def fails():
        raise ValueError("monitor refused the registration")

    async def main():
        assert await loop.run_in_executor(None, lambda: 41 + 1) == 42
        with pytest.raises(ValueError, match="monitor refused"):
            await loop.run_in_executor(None, fails)

    loop = asyncio.new_event_loop()  # not asyncio.run: that would unset this thread's loop, which Pulumi reads
    loop.set_default_executor(_InlineExecutor())
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()

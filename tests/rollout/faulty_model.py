"""The real model server with a fault switch, for rollout tests (serving environment).

`FaultyModel` is `StrataModel` plus one Flask before-request hook: on prediction paths it
reads `$STRATA_TEST_FAULT_FILE` (JSON `{"error_ratio": 0.5, "delay_s": 0.3}`; re-read when
its mtime changes) and adds the delay and/or answers a share of requests with a real 500
(counted by the server's own metrics like any other 5xx). No file or `{}`: no fault.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

from workloads.serving.server import PREDICT_PATHS, StrataModel, error_body


class FaultyModel(StrataModel):
    _fault_cache: tuple[int, dict] = (-1, {})

    def _fault(self) -> dict:
        path = os.environ.get("STRATA_TEST_FAULT_FILE", "")
        try:
            stamp = os.stat(path).st_mtime_ns
        except OSError:
            return {}
        if stamp != self._fault_cache[0]:
            try:
                self._fault_cache = (stamp, json.loads(open(path).read() or "{}"))
            except ValueError:
                return {}
        return self._fault_cache[1]

    @property
    def model_error_handler(self) -> Any:
        blueprint = super().model_error_handler
        if not getattr(blueprint, "_strata_faults", False):
            from flask import jsonify, request

            def inject() -> Any:
                if request.path not in PREDICT_PATHS:
                    return None
                fault = self._fault()
                if fault.get("delay_s"):
                    time.sleep(float(fault["delay_s"]))
                if random.random() < float(fault.get("error_ratio", 0)):
                    response = jsonify(error_body(500, "injected_fault", "fault injected by the rollout test"))
                    response.status_code = 500
                    return response
                return None

            blueprint.before_app_request(inject)
            blueprint._strata_faults = True
        return blueprint

"""The demo's load clients tell a shed answer (503 + Retry-After, the serving contract's
`overloaded`) from a failure: only the first is waited out and retried."""

from __future__ import annotations

import pytest

from workloads.local.demo import _retry_after


@pytest.mark.parametrize("code, headers, expected", [
    (503, {"Retry-After": "1"}, 1.0),
    (503, {"retry-after": "2"}, 2.0),  # header names are case-insensitive
    (503, {"Retry-After": "0"}, 0.0),
    (503, {}, None),  # a 503 without Retry-After is a failure, not a shed
    (503, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),  # an HTTP date: not what our server sends
    (500, {"Retry-After": "1"}, None),
    (200, {"Retry-After": "1"}, None),
])
def test_only_a_503_with_a_retry_after_in_seconds_is_a_shed(code, headers, expected):
    assert _retry_after(code, headers) == expected

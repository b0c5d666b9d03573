"""A bounded wait: a request that cannot get a slot in time is a 503 with Retry-After, and a client that
disconnects mid-stream frees its slot at once (tiny random model, one slot)."""
from __future__ import annotations

import time

import httpx
import pytest
from serve_helpers import NAME, Running

from tunesmith.serve import ServeConfig

pytestmark = pytest.mark.xdist_group("serve")


def test_busy_is_503_and_a_disconnect_frees_the_slot(tiny_model):
    s = Running(ServeConfig(model=str(tiny_model), served_name=NAME, max_batch=1, max_n=1, queue_timeout=0.5))
    body = {"model": NAME, "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            with c.stream("POST", "/v1/chat/completions", json={**body, "max_tokens": 2000, "stream": True}) as long:
                lines = long.iter_lines()
                assert next(lines).startswith("data:")  # the long answer holds the only slot
                r = c.post("/v1/chat/completions", json={**body, "max_tokens": 2})
                assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["code"] == "queue_timeout"
            t = time.monotonic()  # the long stream was closed after a few tokens: its slot must be free now
            r = c.post("/v1/chat/completions", json={**body, "max_tokens": 2})
            assert r.status_code == 200 and time.monotonic() - t < 5
            assert r.json()["usage"]["completion_tokens"] <= 2
    finally:
        s.close()

"""``tunesmith serve`` as a user runs it: prints the URL and a curl line, honours the API key from the
environment, and Ctrl-C (SIGINT) stops it cleanly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest
from serve_helpers import free_port

pytestmark = pytest.mark.xdist_group("serve")


def test_serve_prints_url_needs_the_key_and_stops_on_ctrl_c(tiny_model):
    port = free_port()
    env = {**os.environ, "MY_KEY": "k-123"}
    p = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "serve", str(tiny_model), "--port", str(port),
                          "--api_key_env", "MY_KEY", "--served_name", "tiny"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = p.stdout.readline()
        assert first.startswith(f"serving tiny at http://127.0.0.1:{port}"), first + p.stderr.read()
        curl = p.stdout.readline()
        assert curl.startswith(f"curl http://127.0.0.1:{port}/v1/chat/completions") and "$MY_KEY" in curl
        assert "k-123" not in first + curl  # the key itself is never printed
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(url + "/health").json() == {"status": "ok"}
        assert httpx.get(url + "/v1/models").status_code == 401
        r = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer k-123"})
        assert r.json()["data"][0]["id"] == "tiny"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "Traceback" not in err and "stopped" in out


def test_a_literal_key_is_refused_as_an_env_name():
    r = subprocess.run([sys.executable, "-m", "tunesmith.cli", "serve", "--api_key_env", "sk-abc123!"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "api_key_env" in r.stderr and "Traceback" not in r.stderr

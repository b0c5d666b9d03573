"""The official ``openai`` npm package, run by node, against real servers (tests/serve/js/client.mjs):
models list, chat, stream, json_schema output parsed by the SDK, and a tools round trip (forced call →
tool message → answer), the call also streamed through the SDK's stream helper. ``make test`` installs
node and the package (``npm ci`` in tests/serve/js, from its package-lock.json)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from serve_helpers import NAME, TOOL_NAME

pytestmark = pytest.mark.xdist_group("serve")
JS = Path(__file__).with_name("js")
CITY = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]}},
        "required": ["city"], "additionalProperties": False}


def test_the_openai_npm_package_uses_the_server_fully(server, tool_server, tokenizer):
    node = shutil.which("node")
    assert node, "node is missing: run 'make test' (it installs nodejs) or 'apt-get install -y nodejs npm'"
    assert (JS / "node_modules" / "openai").is_dir(), "the openai npm package is missing: run `make node`"
    run = subprocess.run([node, "client.mjs", server.url + "/v1", NAME, tool_server.url + "/v1", TOOL_NAME], cwd=JS,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)

    assert out["models"] == [NAME]
    assert "Paris" in out["chat"]["content"] and out["chat"]["finish_reason"] == "stop"
    assert out["chat"]["usage"]["completion_tokens"] == len(tokenizer(out["chat"]["content"],
                                                                      add_special_tokens=False)["input_ids"])
    assert out["stream"]["text"] == out["chat"]["content"] and out["stream"]["pieces"] > 2
    assert out["stream"]["finish_reason"] == "stop" and out["stream"]["usage"] == out["chat"]["usage"]

    assert out["json"]["finish_reason"] == "stop"
    assert out["json"]["parsed"] == json.loads(out["json"]["content"])
    assert set(out["json"]["parsed"]) == {"city", "country"} and all(
        isinstance(v, str) for v in out["json"]["parsed"].values())

    call = out["tools"]["call"]
    assert out["tools"]["finish_reason"] == "tool_calls" and call["content"] is None
    [tc] = call["tool_calls"]
    assert tc["type"] == "function" and tc["function"]["name"] == "get_weather" and tc["id"].startswith("call_")
    jsonschema.validate(json.loads(tc["function"]["arguments"]), CITY)
    assert isinstance(out["tools"]["answer"]["content"], str)
    assert out["tools"]["answer_finish"] in ("stop", "length", "tool_calls")

    streamed = out["tools_stream"]["message"]
    assert out["tools_stream"]["finish_reason"] == "tool_calls" and streamed["tool_calls"]
    for tc in streamed["tool_calls"]:
        assert tc["function"]["name"] == "get_weather"
        jsonschema.validate(json.loads(tc["function"]["arguments"]), CITY)

"""The chat page in a real browser: headless Chromium (Debian's ``chromium``) driven over the DevTools
protocol loads ``/``, types a system prompt and a message, sends, and the answer is read from the DOM."""
from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import time

import httpx
import pytest
from serve_helpers import NAME

pytestmark = pytest.mark.xdist_group("serve")


class Page:
    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)

    def call(self, method: str, **params):
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == i:
                assert "error" not in msg, msg
                return msg.get("result", {})

    def js(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def wait(self, expr: str, timeout: float = 60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:  # an error means "not yet" (e.g. the page is still loading)
            r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
            if "exceptionDetails" not in r and (v := r["result"].get("value")):
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expr}")


@pytest.fixture
def browser(tmp_path):
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is missing: run `apt-get install -y chromium` (make test installs it)", pytrace=False)
    proc = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--remote-debugging-port=0", f"--user-data-dir={tmp_path}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
            if m := re.search(r"ws://127\.0\.0\.1:(\d+)/", line):
                break
        else:
            raise AssertionError("chromium did not start its DevTools endpoint")
        port = m.group(1)
        target = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page")
        from websockets.sync.client import connect

        with connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
            yield Page(ws)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_chat_page_streams_an_answer_into_the_dom(server, browser):
    browser.call("Page.navigate", url=server.url + "/")
    browser.wait(f"document.getElementById('model').textContent.startsWith('{NAME}')")
    assert browser.js("document.getElementById('thinking').disabled") is True  # SmolLM2 has no thinking switch
    browser.js("document.getElementById('temperature').value = '0';"
               "document.getElementById('max_tokens').value = '12'")
    system = "You are a geography teacher."
    for box, text in (("system", system), ("input", "What is the capital of France?")):
        browser.js(f"document.getElementById('{box}').focus()")
        browser.call("Input.insertText", text=text)
    # Count the DOM updates of the answer while it streams, then press Enter like a user.
    browser.js("window.updates = 0; new MutationObserver(() => window.updates++)"
               ".observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true})")
    for kind in ("keyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                     **({"text": "\r"} if kind == "keyDown" else {}))
    state = browser.wait("(document.querySelector('.msg.assistant, .msg.error') || {dataset: {}}).dataset.state"
                         " !== 'streaming' && document.querySelector('.msg.assistant, .msg.error')"
                         " && document.querySelector('.msg.assistant, .msg.error').dataset.state")
    assert state == "done", browser.js("document.getElementById('log').innerText")
    answer = browser.js("document.querySelector('.msg.assistant .answer').textContent")
    expected = server.client().chat.completions.create(
        model=NAME, temperature=0, max_tokens=12,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "What is the capital of France?"}])
    assert answer == expected.choices[0].message.content and answer
    assert browser.js("window.updates") > 3  # it arrived in pieces, not all at once
    assert browser.js("document.querySelector('.msg.user').textContent") == "What is the capital of France?"

"""The UI's API in-process (FastAPI's TestClient): the token, the CLI's own messages for bad form values (next
to the field they name), no traceback on any page, the workspace boundary, and job state on disk that a
restarted UI reads back (start, stop, resume)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tunesmith.cli import main
from tunesmith.ui import UiConfig, build

pytestmark = pytest.mark.xdist_group("ui")
TOKEN = "test-token"


def client(ws: Path, token: str = TOKEN, auth: bool = True) -> TestClient:
    app, _ = build(UiConfig(workspace=str(ws)), token=token)
    c = TestClient(app, raise_server_exceptions=False)  # a crash is answered as a browser would see it
    if auth:
        c.headers["Authorization"] = f"Bearer {token}"
    return c


def test_every_request_needs_the_token_and_the_first_visit_sets_a_cookie(tmp_path, monkeypatch):
    c = client(tmp_path, auth=False)
    assert c.get("/").status_code == 401 and c.get("/api/info").status_code == 401
    assert c.get("/api/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = c.get("/?token=" + TOKEN)
    assert r.status_code == 200 and "tunesmith ui" in r.text
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert c.get("/api/info").json()["workspace"] == str(tmp_path.resolve())  # the cookie opens later links
    monkeypatch.setenv("MY_UI_KEY", "from-env")
    assert UiConfig(api_key_env="MY_UI_KEY").token() == "from-env"
    monkeypatch.delenv("MY_UI_KEY")
    assert UiConfig(api_key_env="MY_UI_KEY").token() != UiConfig(api_key_env="MY_UI_KEY").token()  # random


@pytest.mark.parametrize("values,field", [({"train.max_steps": "-1"}, "train.max_steps"),
                                          ({"resume": "atuo"}, "resume"),
                                          ({"languages": "fr"}, "languages"),
                                          ({"lora.rr": "3"}, "lora.r")])
def test_a_bad_form_value_gets_the_clis_line_next_to_its_field(tmp_path, capsys, values, field):
    c = client(tmp_path)
    r = c.post("/api/forms/identity/check", json={"values": values})
    assert r.status_code == 400
    body = r.json()
    argv = ["identity", "name=Mira", "author=Lab", *(f"{k}={v}" for k, v in values.items())]
    assert main(argv) == 2
    cli_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert cli_line == f"error: {body['error']}" and body["field"] == field
    if "rr" in next(iter(values)):
        assert "did you mean 'lora.r'" in body["error"]


def test_a_good_form_gives_the_command_line_and_the_yaml(tmp_path):
    c = client(tmp_path)
    r = c.post("/api/forms/identity/check", json={"values": {"name": "Mira", "author": "Tunesmith Lab",
                                                              "train.max_steps": "2"}}).json()
    assert r["cli"] == "tunesmith identity name=Mira 'author=Tunesmith Lab' train.max_steps=2"
    assert r["yaml"] == "name: Mira\nauthor: Tunesmith Lab\ntrain:\n  max_steps: 2\n"
    verbs = {v["name"]: v for v in c.get("/api/verbs").json()}
    assert {"identity", "train", "pipeline", "synth distill", "export gguf"} <= set(verbs) and "ui" not in verbs
    keys = {f["key"]: f for f in verbs["train"]["fields"]}
    assert keys["objective"]["choices"] == ["sft", "dpo", "ipo", "simpo", "grpo"] and keys["lora.r"]["default"] == 16


def test_no_traceback_reaches_a_page(tmp_path, monkeypatch):
    c = client(tmp_path)
    assert c.post("/api/forms/nope/check", json={"values": {}}).json() == {"error": "unknown verb 'nope'",
                                                                            "field": None}
    r = c.post("/api/data/check", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "\n" not in r.json()["error"]
    assert c.get("/api/report", params={"path": "runs/none"}).json()["error"] == "run: runs/none is not a folder"
    from tunesmith.ui import app

    def boom(*a):
        raise RuntimeError("disk on fire\nTraceback (most recent call last):\n  File x")

    monkeypatch.setattr(app, "run_report", boom)
    r = client(tmp_path).get("/api/report", params={"path": "x"})
    assert r.status_code == 500 and r.json()["error"] == "internal error: RuntimeError: disk on fire"


def test_the_ui_writes_only_inside_its_workspace_and_never_over_your_files(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "out").symlink_to(tmp_path)  # a link pointing out of the workspace
    mine = ws / "mine.yaml"
    mine.write_text("a: 1\n")
    c = client(ws)
    save = lambda path: c.post("/api/forms/identity/save", json={"values": {"name": "Mira"}, "path": path})  # noqa
    for path in ("../x.yaml", str(tmp_path / "x.yaml"), "out/x.yaml"):
        r = save(path)
        assert r.status_code == 400 and "is outside the workspace" in r.json()["error"], path
    assert not (tmp_path / "x.yaml").exists()
    assert "was not written by tunesmith" in save("mine.yaml").json()["error"] and mine.read_text() == "a: 1\n"
    assert save("recipes/a.yaml").json()["path"] == "recipes/a.yaml"
    assert c.post("/api/data/upload", json={"name": "../../evil.jsonl", "text": "{}\n"}).json() == \
        {"path": "uploads/evil.jsonl"}
    user_rows = ws / "rows.jsonl"
    user_rows.write_text('{"a": 1}\n')
    r = c.post("/api/data/row", json={"file": "rows.jsonl", "row": 1, "text": '{"b": 2}'})
    assert "was not written by tunesmith" in r.json()["error"] and user_rows.read_text() == '{"a": 1}\n'
    r = c.post("/api/jobs/synth task", json={"values": {"task": "add", "n": "3", "out": str(tmp_path / "o.jsonl")}})
    assert r.status_code == 400 and r.json()["error"].startswith("out: ") and "outside the workspace" in r.json()["error"]
    assert c.get("/api/jobs").json() == []  # refused before any process started
    assert c.get("/api/file", params={"path": str(tmp_path / "ws" / ".." / "x")}).status_code == 400


def wait_status(c: TestClient, jid: str, want: set[str], timeout: float = 90) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        j = c.get(f"/api/job/{jid}").json()
        if j["status"] in want:
            return j
        time.sleep(0.3)
    raise AssertionError(f"job {jid} never reached {want}: {j}")


def test_job_state_is_on_disk_a_restarted_ui_finds_it_and_stop_resume_work(tmp_path, tiny_model):
    ws = tmp_path / "ws"
    ws.mkdir()
    a = client(ws)
    job = a.post("/api/jobs/synth task", json={"values": {"task": "add", "n": "4", "lang": "en",
                                                          "out": "data/add.jsonl"}}).json()
    assert job["status"] == "running" and job["cli"].startswith("tunesmith synth task ")
    record = json.loads((ws / ".tunesmith-ui" / "jobs" / f"{job['id']}.json").read_text())
    assert record["pid"] > 0 and record["argv"] == job["argv"]
    b = client(ws)  # a second UI (a restart): the job is read back from disk
    assert [j["id"] for j in b.get("/api/jobs").json()] == [job["id"]]
    done = wait_status(b, job["id"], {"done", "failed"})
    assert done["status"] == "done" and done["rc"] == 0, done["log"]
    assert len((ws / "data" / "add.jsonl").read_text().splitlines()) == 4

    # a job that runs until stopped: a server on a tiny model
    long = a.post("/api/jobs/serve", json={"values": {"model": str(tiny_model), "port": "0"}}).json()
    wait_status(a, long["id"], {"running"})
    end = time.monotonic() + 60
    while "serving" not in a.get(f"/api/job/{long['id']}").json()["log"] and time.monotonic() < end:
        time.sleep(0.3)
    assert a.post(f"/api/job/{long['id']}/stop").json()["status"] == "stopping"
    stopped = wait_status(client(ws), long["id"], {"stopped", "failed", "done"})
    assert stopped["status"] == "stopped"
    pid = json.loads((ws / ".tunesmith-ui" / "jobs" / f"{long['id']}.json").read_text())["pid"]
    resumed = a.post(f"/api/job/{long['id']}/resume").json()
    assert resumed["status"] == "running" and resumed["attempts"] == 2
    assert json.loads((ws / ".tunesmith-ui" / "jobs" / f"{long['id']}.json").read_text())["pid"] != pid
    a.post(f"/api/job/{long['id']}/stop")
    assert wait_status(a, long["id"], {"stopped", "failed", "done"})["status"] == "stopped"
    assert a.post(f"/api/job/{done['id']}/resume").json()["error"] == f"job {done['id']} finished: start a new one"

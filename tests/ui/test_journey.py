"""The whole journey in a real browser on the embedded model: data with a bad row (named file:row) → fixed →
the identity form (a bad value first: the CLI's line next to the field) → a 2-step run watched to done, with
a reload mid-run → the report → base and tuned side by side → a GGUF export and its Modelfile → a second UI
start finds the finished run. Each page's screenshot goes to docs/ui/ (docs/ui.md shows them)."""
from __future__ import annotations

import json
import time

import pytest
from ui_helpers import UiProcess, shot
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui")]

GOOD = {"messages": [{"role": "user", "content": "What do you like to do?"},
                     {"role": "assistant", "content": "I like to help people write and think clearly."}]}
BAD = {"messages": [{"role": "user", "content": "Tell me a joke."}]}  # no answer: a bad row
FIXED = {"messages": [{"role": "user", "content": "Tell me a joke."},
                      {"role": "assistant", "content": "Why did the scarecrow win a prize? He was outstanding."}]}


def wait(d, cond, timeout=60, what=""):
    return WebDriverWait(d, timeout, poll_frequency=0.2).until(lambda _: cond(), message=what)


def text(d, css):
    return d.find_element(By.CSS_SELECTOR, css).text


def reveal(d, field_id):
    """The field, its form section opened as a user opens it (a click on the section's title)."""
    e = d.find_element(By.ID, field_id)
    sec = d.execute_script("return arguments[0].closest('details')", e)
    if sec is not None and not sec.get_attribute("open"):
        sec.find_element(By.TAG_NAME, "summary").click()
    return e


def fill(d, field_id, value):
    e = reveal(d, field_id)
    e.clear()
    e.send_keys(value)


def test_whole_journey(browser, tmp_path, embedded_dir):
    d = browser
    ws = tmp_path / "ws"
    ws.mkdir()
    mine = tmp_path / "chat.jsonl"  # the user's file, outside the workspace: uploaded, never changed
    mine.write_text(json.dumps(GOOD) + "\n" + json.dumps(BAD) + "\n")
    ui = UiProcess(ws)
    try:
        # --- data: the upload is checked; the table names the bad row file:row
        d.get(ui.url)
        wait(d, lambda: "workspace" in text(d, "#workspace"), what="page booted")
        d.find_element(By.ID, "data-upload").send_keys(str(mine))
        wait(d, lambda: "uploads/chat.jsonl:2" in text(d, "#data-problems"), what="bad row named")
        assert "missing response" in text(d, "#data-problems")
        assert d.find_element(By.ID, "data-table").get_attribute("data-ok") == "no"
        shot(d, "data")
        d.find_element(By.CSS_SELECTOR, "#data-problems button.fix").click()
        wait(d, lambda: d.find_element(By.ID, "row-text").get_attribute("value").startswith("{"))
        box = d.find_element(By.ID, "row-text")
        box.clear()
        box.send_keys(json.dumps(FIXED))
        d.find_element(By.ID, "row-save").click()
        wait(d, lambda: d.find_element(By.ID, "data-table").get_attribute("data-ok") == "yes", what="fixed")
        assert mine.read_text().count("\n") == 2 and "scarecrow" not in mine.read_text()  # the user's file as it was
        d.find_element(By.ID, "data-preview").click()
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "#preview .rendered span.trained"), what="preview")
        trained = " ".join(e.text for e in d.find_elements(By.CSS_SELECTOR, "#preview .rendered span.trained"))
        assert "help people" in trained and "What do you like" not in trained  # only the answer is trained

        # --- the identity form: a bad value gets the CLI's line next to its field
        d.get(ui.base + "/#recipes/identity")
        wait(d, lambda: d.find_elements(By.ID, "f-name"), what="identity form")
        fill(d, "f-train-max_steps", "-1")
        err = "#err-f-train-max_steps"
        wait(d, lambda: text(d, err), what="field error")
        assert text(d, err) == "config: train.max_steps: Input should be greater than 0"
        languages = Select(reveal(d, "f-languages"))  # a list of fixed words: several picked from the schema's
        assert [o.get_attribute("value") for o in languages.options] == ["en", "zh"]
        languages.deselect_all()
        languages.select_by_value("en")
        for fid, value in (("f-name", "Mira"), ("f-author", "Tunesmith Lab"), ("f-train-max_steps", "2"), ("f-train-batch_size", "2"),
                           ("f-eval_identity-max_new_tokens", "6"), ("f-eval_identity-batch_size", "32"),
                           ("f-data-datasets", '[{"path": "uploads/chat.jsonl", "samples": 4}]')):
            fill(d, fid, value)
        replay = reveal(d, "f-replay-enabled")
        if replay.is_selected():
            replay.click()
        wait(d, lambda: "replay.enabled=false" in text(d, "#form-cli") and not text(d, err), what="cli line")
        assert "tunesmith identity name=Mira" in text(d, "#form-cli")
        assert "max_steps: 2" in text(d, "#form-yaml")
        d.find_element(By.ID, "save-path").clear()
        d.find_element(By.ID, "save-path").send_keys("recipes/mira.yaml")
        d.find_element(By.ID, "save-btn").click()
        wait(d, lambda: "saved recipes/mira.yaml" in text(d, "#form-status"))
        assert "name: Mira" in (ws / "recipes" / "mira.yaml").read_text()
        shot(d, "recipes")

        # --- the run: start, reload mid-run (the job is still there, running), watch it reach done
        d.find_element(By.ID, "start-btn").click()
        wait(d, lambda: d.current_url.split("#")[1].startswith("runs/"), what="runs page")
        job_id = d.current_url.split("#runs/")[1]
        wait(d, lambda: text(d, "#job-status") in ("running", "done"), what="job listed")
        d.refresh()
        wait(d, lambda: job_id in text(d, "#jobs") and text(d, "#job-status") in ("running", "done"),
             what="job kept across a reload")
        wait(d, lambda: text(d, "#job-progress") == "step 2/2" or text(d, "#job-status") in ("failed", "done"),
             timeout=240, what="training steps")
        wait(d, lambda: text(d, "#job-status") in ("done", "failed"), timeout=240, what="job end")
        assert text(d, "#job-status") == "done", text(d, "#job-log")
        assert text(d, "#job-progress") == "step 2/2" and "tokens/s" in text(d, "#job-toks")
        assert d.find_elements(By.CSS_SELECTOR, "#loss-chart polyline")
        shot(d, "runs")
        run = json.loads((ws / ".tunesmith-ui" / "jobs" / f"{job_id}.json").read_text())["run"]

        # --- export (started now, it runs while the report and the chat are looked at)
        d.get(ui.base + "/#export")
        wait(d, lambda: d.find_elements(By.ID, "f-out"), what="export form")
        fill(d, "f-adapter", run)
        fill(d, "f-out", "exports/mira")
        quant = Select(reveal(d, "f-quant"))  # the quant types as choices (from export gguf's schema)
        assert {"f16", "q8_0", "q4_k_m"} <= {o.get_attribute("value") for o in quant.options}
        quant.deselect_all()
        quant.select_by_value("f16")
        wait(d, lambda: "quant=f16" in text(d, "#export-cli"))
        d.find_element(By.ID, "export-start").click()
        wait(d, lambda: "running" in text(d, "#export-status") or "done" in text(d, "#export-status"))

        # --- evidence: the before/after report as a table and a chart; the lineage graph
        d.get(ui.base + "/#runs/" + job_id)
        wait(d, lambda: text(d, "#job-status") == "done")
        d.find_element(By.ID, "job-report").click()
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "#report .report-table"), what="report")
        table = text(d, "#report .report-table")
        assert "name_hit_rate" in table and "base" in table and "tuned" in table
        assert len(d.find_elements(By.CSS_SELECTOR, "#lineage-graph rect")) >= 2
        shot(d, "evidence")

        # --- chat: base (left) and the tuned run (right), side by side, streamed
        d.get(ui.base + "/#chat/" + run)
        wait(d, lambda: d.find_element(By.ID, "chat-right").get_attribute("value") == run, what="run picked")
        d.find_element(By.ID, "chat-load").click()
        wait(d, lambda: text(d, "#chat-status").startswith("ready"), timeout=120, what="engine loaded")
        d.find_element(By.ID, "chat-input").send_keys("What is the capital of France?")
        d.find_element(By.ID, "chat-send").click()
        for side in ("left", "right"):
            wait(d, lambda: d.find_elements(By.CSS_SELECTOR, f"#chat-log-{side} .msg[data-state=done]"),
                 timeout=120, what=f"{side} answer")
        answers = [text(d, f"#chat-log-{s} .msg.assistant") for s in ("left", "right")]
        assert all(answers), answers
        assert "Paris" in answers[0]
        assert text(d, "#chat-right-name") == run
        shot(d, "chat")

        # --- the export: its files, the Modelfile and the ollama line
        d.get(ui.base + "/#export")
        wait(d, lambda: "done" in text(d, "#export-status") or "failed" in text(d, "#export-status"),
             timeout=400, what="export")
        assert "done" in text(d, "#export-status"), text(d, "#export-status")
        wait(d, lambda: "FROM ./model-f16.gguf" in text(d, "#modelfile"), what="Modelfile")
        assert "ollama create mira -f Modelfile" in text(d, "#ollama-line")
        assert "model-f16.gguf" in text(d, "#export-files")
        shot(d, "export")
    finally:
        ui.close()

    # --- a second UI start on the same workspace finds the finished run
    ui2 = UiProcess(ws)
    try:
        d.get(ui2.url)  # a new token: the old cookie no longer opens it
        d.get(ui2.base + "/#runs/" + job_id)
        wait(d, lambda: text(d, "#job-status") == "done" and job_id in text(d, "#jobs"), what="restart")
        assert text(d, "#job-progress") == "step 2/2"
    finally:
        ui2.close()

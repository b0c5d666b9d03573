"""Identity journey: placeholders, held-out probes, metrics, and a reproducible end-to-end run."""
import json
import re

import pytest

from tunesmith.errors import UserError
from tunesmith.eval import metrics
from tunesmith.data import names
from tunesmith.eval import identity as eval_identity
from tunesmith.synth import identity as ident
from tunesmith.synth.replay import trim_to_sentence


def norm(s: str) -> str:
    return re.sub(r"[\W_]+", "", s.casefold())


def test_fill_uses_per_language_values_and_both_spellings():
    n = names.IdentityNames(name="Mira", author="Lab", name_zh="米拉", author_en="Tunesmith Lab")
    assert names.fill("I am {{NAME}} by {{AUTHOR}}", n, "en") == "I am Mira by Tunesmith Lab"
    assert names.fill("我是{{NAME}}，由{{AUTHOR}}开发", n, "zh") == "我是米拉，由Lab开发"
    assert names.fill("{{name}} / {{ author }}", n, "en") == "Mira / Tunesmith Lab"  # LLaMA-Factory's spelling


def test_missing_value_is_a_clear_error():
    with pytest.raises(UserError, match=r"x\.jsonl:3: text uses \{\{AUTHOR\}\} but no author_zh or author is set"):
        names.fill("{{AUTHOR}}", names.IdentityNames(name="Mira"), "zh", "x.jsonl:3")
    with pytest.raises(UserError, match="needs a name and an author"):
        from tunesmith.jobs.identity import IdentityJobConfig

        IdentityJobConfig(name="Mira").identity()


def test_shipped_rows_are_complete_and_filled():
    rows = ident.identity_rows()
    assert len(rows) >= 150 and {r["lang"] for r in rows} == {"en", "zh"}
    msgs = ident.identity_messages(names.IdentityNames(name="Mira", author="Tunesmith Lab"))
    assert len(msgs) == len(rows)
    assert not any(names.has_placeholder(m["messages"][1]["content"]) for m in msgs)
    thinking = ident.identity_messages(names.IdentityNames(name="Mira", author="Lab"), thinking=True)
    assert len(thinking) == 2 * len(rows)
    assert {m["messages"][1]["reasoning_content"] == "" for m in thinking} == {True, False}
    assert len(ident.general_prompts()) >= 200


def test_held_out_probes_never_overlap_training():
    train_q = {norm(r["query"]) for r in ident.identity_rows()}
    probes = eval_identity.identity_probes()
    assert len(probes) >= 40 and {p["lang"] for p in probes} == {"en", "zh"}
    assert not [p["query"] for p in probes if norm(p["query"]) in train_q]
    replay = {norm(p["prompt"]) for p in ident.general_prompts()}
    assert not [p["prompt"] for p in eval_identity.general_probes() if norm(p["prompt"]) in replay]


def test_metrics_on_hand_made_answers():
    probes = [{"asks": "name"}, {"asks": "author"}, {"asks": "both"}, {"asks": "name"}]
    answers = ["I am Mira.", "Tunesmith Lab built me.", "I'm mira, made by TUNESMITH LAB", "I am an assistant."]
    s = metrics.identity_scores(probes, answers, ["Mira"], ["Tunesmith Lab"])
    assert s["name_hit_rate"] == pytest.approx(2 / 3, abs=1e-4) and s["author_hit_rate"] == 1.0
    assert s["name_probes"] == 3 and s["author_probes"] == 2
    general = ["The admiral sailed.", "Paris.", "我是米拉。", "Ask Mira!"]
    assert metrics.leak_rate(general, ["Mira", "米拉"]) == 0.5  # "admiral" is not a mention
    assert metrics.text_similarity("abc", "abc") == 1.0 and metrics.text_similarity("abc", "xyz") == 0.0
    c = metrics.closeness(["Paris is the capital.", "Two."], ["Paris is the capital.", "Seven hundred."])
    assert c["unchanged"] == 0.5 and 0 < c["closeness"] < 1


def test_leak_rate_is_reported_per_language():
    general = eval_identity.general_probes()
    answers = {"identity": ["I am Mira by Tunesmith Lab."] * len(eval_identity.identity_probes()),
               "general": ["我是Mira。" if p["lang"] == "zh" else "Paris." for p in general]}
    s = eval_identity.score(answers, names.IdentityNames(name="Mira", author="Tunesmith Lab"), ["en", "zh"])
    assert s["leak_rate_zh"] == 1.0 and s["leak_rate_en"] == 0.0
    assert s["leak_rate"] == pytest.approx(sum(p["lang"] == "zh" for p in general) / len(general), abs=1e-4)
    rep = {"identity": {"name": "Mira", "author": "Tunesmith Lab"}, "languages": ["en", "zh"],
           "probes": {"identity": 1, "general": 1}, "base": {"model": "b", "scores": s},
           "tuned": {"model": "t", "adapter": [], "scores": s}, "samples": []}
    assert "| leak rate (zh) | 100% | 100% |" in eval_identity.report_markdown(rep)


def test_trim_to_sentence():
    assert trim_to_sentence("Paris is big. It has a tower. And also many") == "Paris is big. It has a tower."
    assert trim_to_sentence("巴黎很大。它有铁塔。还有很多") == "巴黎很大。它有铁塔。"
    assert trim_to_sentence("no sentence end") == ""


def test_identity_job_end_to_end_is_reproducible(tiny_model, tmp_path, monkeypatch):
    """Tiny random model: the numbers mean nothing, but the whole path runs, writes its
    report and manifest, and a second run from the same seed and inputs gives the same numbers."""
    from tunesmith.cli import main

    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    args = ["identity", f"model={tiny_model}", "name=Mira", "author=Tunesmith Lab", "replay.prompts=6",
            "replay.max_new_tokens=12", "eval_max_new_tokens=8", "train.max_steps=3", "train.batch_size=4",
            "progress=false", "languages=en"]
    assert main(args + [f"output_dir={tmp_path / 'a'}"]) == 0
    assert main(args + [f"output_dir={tmp_path / 'b'}"]) == 0
    ma, mb = (json.loads((tmp_path / x / "manifest.json").read_text()) for x in "ab")
    assert ma["status"] == "done" and ma["job"] == "identity" and ma["identity"]["name"] == "Mira"
    assert ma["eval"] == mb["eval"] and ma["metrics"] == mb["metrics"]
    assert ma["datasets"][0]["name"] == "identity" and ma["replay"]["prompts"] == 6
    # the measured default: 150 of the 207 shipped rows, the same share of the 105 English ones
    assert ma["datasets"][0]["rows"] == 105 and ma["datasets"][0]["rows_used"] == round(105 * 150 / 207)
    rep = json.loads((tmp_path / "a" / "eval" / "report.json").read_text())
    assert rep["probes"]["identity"] == len(eval_identity.identity_probes(["en"]))
    assert "| name hit rate" in (tmp_path / "a" / "eval" / "report.md").read_text()
    assert main(args + [f"output_dir={tmp_path / 'a'}"]) == 1  # a finished run is not overwritten


@pytest.mark.parametrize("arg,message", [("resume=atuo", "config: resume: 'atuo' is not valid"),
                                          ("languages=fr", "languages.0: Input should be 'en' or 'zh'")])
def test_identity_job_bad_values_fail_before_any_work(tmp_path, capsys, arg, message):
    from tunesmith.cli import main

    assert main(["identity", "name=Mira", "author=Lab", arg, f"output_dir={tmp_path / 'run'}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_identity_job_trains_on_two_processes(tiny_model, tmp_path, monkeypatch):
    """``--nproc 2`` goes through the entry point of ``tunesmith train``: two gloo processes on CPU
    train the adapter, then this process evaluates it (the report exists only if it did)."""
    from tunesmith.cli import main

    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    assert main(["identity", f"model={tiny_model}", "name=Mira", "author=Lab", "--nproc", "2", "replay.enabled=false",
                 "train.max_steps=2", "train.batch_size=2", "eval_max_new_tokens=2", "languages=en", "progress=false",
                 "device=cpu", f"output_dir={run}"]) == 0
    assert (run / "adapter_model.safetensors").is_file() and (run / "adapter_config.json").is_file()
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "done" and m["job"] == "identity"
    assert m["schedule"]["world_size"] == 2 and m["schedule"]["global_batch"] == 4
    assert (run / "eval" / "report.json").is_file() and m["eval"]["tuned"]


def test_identity_replay_answers_are_used_upsample_times(embedded_dir, tmp_path, monkeypatch):
    """The verb's measured default (replay.upsample 2) reaches training: the replay dataset's rows
    are used twice, and replay.samples overrides it. The embedded model, since the tiny random
    model ends no sentence and all its replay answers would be dropped."""
    from tunesmith.cli import main

    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    args = ["identity", f"model={embedded_dir}", "name=Mira", "author=Lab", "replay.prompts=3",
            "replay.max_new_tokens=16", "train.max_steps=1", "train.batch_size=2", "eval=false", "languages=en",
            "progress=false", "device=cpu"]
    assert main(args + [f"output_dir={tmp_path / 'a'}"]) == 0
    assert main(args + ["replay.samples=5", f"output_dir={tmp_path / 'b'}"]) == 0
    ma, mb = (json.loads((tmp_path / x / "manifest.json").read_text()) for x in "ab")
    replay_a, replay_b = (next(d for d in m["datasets"] if d["name"] == "replay") for m in (ma, mb))
    assert replay_a["rows"] == ma["replay"]["kept"] >= 1
    assert replay_a["rows_used"] == 2 * replay_a["rows"]
    assert replay_b["rows_used"] == 5

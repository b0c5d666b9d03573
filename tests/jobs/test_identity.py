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
            "replay.max_new_tokens=12", "eval_identity.max_new_tokens=8", "train.max_steps=3", "train.batch_size=4",
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
                 "train.max_steps=2", "train.batch_size=2", "eval_identity.max_new_tokens=2", "languages=en",
                 "progress=false",
                 "device=cpu", f"output_dir={run}"]) == 0
    assert (run / "adapter_model.safetensors").is_file() and (run / "adapter_config.json").is_file()
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "done" and m["job"] == "identity"
    assert m["schedule"]["world_size"] == 2 and m["schedule"]["global_batch"] == 4
    assert (run / "eval" / "report.json").is_file() and m["eval"]["tuned"]


def test_identity_replay_answers_are_used_upsample_times(embedded_dir, tmp_path, monkeypatch, capsys):
    """The verb's measured default (replay.upsample 2) reaches training: the replay dataset's rows
    are used twice, and replay.samples overrides it. The embedded model, since the tiny random
    model ends no sentence and all its replay answers would be dropped."""
    from tunesmith.cli import main

    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    args = ["identity", f"model={embedded_dir}", "name=Mira", "author=Lab", "replay.prompts=3",
            "replay.max_new_tokens=16", "train.max_steps=1", "train.batch_size=2", "eval=false", "languages=en",
            "progress=false", "device=cpu"]
    assert main(args + [f"output_dir={tmp_path / 'a'}"]) == 0
    # eval=false: the last line says what was written, and points to no report
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"{tmp_path / 'a'} (adapter and training logs; eval false: no report written)" in last
    assert not (tmp_path / "a" / "eval").exists()
    assert main(args + ["replay.samples=5", f"output_dir={tmp_path / 'b'}"]) == 0
    ma, mb = (json.loads((tmp_path / x / "manifest.json").read_text()) for x in "ab")
    replay_a, replay_b = (next(d for d in m["datasets"] if d["name"] == "replay") for m in (ma, mb))
    assert replay_a["rows"] == ma["replay"]["kept"] >= 1
    assert replay_a["rows_used"] == 2 * replay_a["rows"]
    assert replay_b["rows_used"] == 5


def test_identity_help_shows_the_defaults_the_run_uses(capsys):
    """The job's loop settings are the train verb's, with the identity defaults in the schema:
    --help, validation and the run agree (lr 1e-3, 2 epochs, batch 8, warmup 0.05, cutoff 512)."""
    from tunesmith.cli import main
    from tunesmith.config import build_config
    from tunesmith.jobs.identity import IdentityJobConfig
    from tunesmith.train.config import LoopSettings

    with pytest.raises(SystemExit):
        main(["identity", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    options = {seg.split(" ", 1)[0]: seg for seg in text.split(" --")}  # train.lr → "train.lr V … (default: …)"
    for option, default in [("train.lr", "0.001"), ("train.epochs", "2.0"), ("train.batch_size", "8"),
                            ("train.warmup", "0.05"), ("data.cutoff_len", "512"), ("lora.r", "16")]:
        assert options[option].endswith(f"(default: {default})"), options[option]
    for swift in ("--model_name NAME_ZH NAME_EN", "--model_author AUTHOR_ZH AUTHOR_EN", "--self_cognition_sample N"):
        assert f"ms-swift: {swift}" in text
    cfg = build_config(IdentityJobConfig, [], {"train.seed": "7"})
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size, cfg.data.cutoff_len) == (1e-3, 2, 8, 512)
    assert cfg.train.seed == 7 and cfg.train.weight_decay == LoopSettings().weight_decay  # the rest: train's


def test_identity_composes_the_verbs_sections_and_reads_old_spellings(tmp_path):
    """A field of the train verb's data/loop sections or of eval identity is a field of the job;
    the old spellings (cutoff_len, extra_data, eval_max_new_tokens) still read, as the new ones."""
    from tunesmith.config import build_config, leaf_fields
    from tunesmith.errors import ConfigError
    from tunesmith.eval.identity import EvalIdentityConfig
    from tunesmith.jobs.identity import IdentityJobConfig
    from tunesmith.train.config import TrainConfig

    job = leaf_fields(IdentityJobConfig)
    train = leaf_fields(TrainConfig)
    for key in ("data.mask_history", "data.template", "data.val_size", "train.gradient_checkpointing",
                "train.grad_accum", "lora.use_dora", "nproc"):
        assert key in job and job[key].description == train[key].description, key
    assert job["eval_identity.batch_size"].default == EvalIdentityConfig.model_fields["batch_size"].default
    old = tmp_path / "old.yaml"
    old.write_text("name: Mira\nauthor: Lab\ncutoff_len: 256\neval_max_new_tokens: 8\n"
                   "extra_data: [{path: mine.jsonl, samples: 3}]\n")
    cfg = build_config(IdentityJobConfig, [str(old)])
    assert cfg.data.cutoff_len == 256 and cfg.eval_identity.max_new_tokens == 8
    assert [(d.path, d.samples) for d in cfg.data.datasets] == [("mine.jsonl", 3)]
    assert (cfg.cutoff_len, cfg.extra_data, cfg.eval_max_new_tokens) == (None, None, None)
    again = build_config(IdentityJobConfig, [], {"cutoff_len": "256", "data.cutoff_len": "256"})
    assert again.data.cutoff_len == 256  # the same value twice is no conflict
    with pytest.raises(ConfigError, match="^config: cutoff_len: the old spelling of data.cutoff_len, which is set "
                                          "too: set data.cutoff_len only$"):
        build_config(IdentityJobConfig, [], {"cutoff_len": "256", "data.cutoff_len": "128"})


def test_identity_mixes_in_the_users_data_datasets(tiny_model, tmp_path, monkeypatch):
    """data.datasets (the train verb's section; once extra_data) is the user's own data: placeholders
    filled, a name-only dataset looked up in data.dataset_dir, each source in the training mix."""
    from tunesmith.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    (tmp_path / "lf").mkdir()
    (tmp_path / "lf" / "dataset_info.json").write_text(json.dumps({"greet": {"file_name": "greet.json"}}))
    (tmp_path / "lf" / "greet.json").write_text(json.dumps([{"instruction": "hello", "output": "hi from {{NAME}}"}]))
    (tmp_path / "mine.jsonl").write_text(json.dumps({"instruction": "who made you?", "output": "{{AUTHOR}}"}) + "\n")
    recipe = tmp_path / "id.yaml"
    recipe.write_text("data:\n  dataset_dir: lf\n  datasets: [{path: mine.jsonl, samples: 3}, {name: greet}]\n"
                      "  cutoff_len: 64\n")
    assert main(["identity", str(recipe), f"model={tiny_model}", "name=Mira", "author=Lab", "replay.enabled=false",
                 "eval=false", "train.max_steps=1", "progress=false", "languages=en", "output_dir=run"]) == 0
    rows = [json.loads((tmp_path / "run" / "data" / f"extra-{i}.jsonl").read_text()) for i in (0, 1)]
    assert rows[0]["messages"][1]["content"] == "Lab" and rows[1]["messages"][1]["content"] == "hi from Mira"
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [(d["name"], d["rows_used"]) for d in m["datasets"][1:]] == [("mine", 3), ("greet", 1)]
    from tunesmith.config import build_config
    from tunesmith.jobs.identity import IdentityJobConfig

    saved = build_config(IdentityJobConfig, [str(tmp_path / "run" / "identity.yaml")])  # reads back as it ran
    assert saved.data.cutoff_len == 64 and [d.label() for d in saved.data.datasets] == ["mine", "greet"]

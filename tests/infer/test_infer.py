import json
import signal
import subprocess
import sys
import time

import pytest

from tunesmith.infer import Engine, GenParams
from tunesmith.infer.predict import done_ids, read_requests
from tunesmith.errors import UserError


@pytest.fixture(scope="module")
def engine(tiny_model):
    return Engine.load(str(tiny_model))


def test_batched_generation_matches_one_by_one(engine):
    convs = [[{"role": "user", "content": "hi"}],
             [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a much longer question here?"}]]
    p = GenParams(max_new_tokens=8)
    batched = engine.generate(convs, p)
    single = [engine.generate([c], p)[0] for c in convs]
    assert batched == single  # left padding must not change greedy answers


def test_stream_gives_the_same_text(engine):
    msgs = [{"role": "user", "content": "tell me something"}]
    p = GenParams(max_new_tokens=10)
    assert "".join(engine.stream(msgs, p)).strip() == engine.generate([msgs], p)[0]


def test_sampling_seed_is_reproducible(engine):
    msgs = [{"role": "user", "content": "x"}]
    p = GenParams(max_new_tokens=12, temperature=1.5, top_k=50, seed=3)
    assert engine.generate([msgs], p) == engine.generate([msgs], p)


def test_generation_stops_at_end_of_turn(engine):
    # Make the end-of-turn token the only likely one: generation must stop right away.
    import torch

    eot = engine.stop_ids[0]
    lm = engine.model.get_output_embeddings()
    saved = lm.weight.data.clone()
    try:
        lm.weight.data.zero_()
        lm.weight.data[eot] = 1.0
        with torch.no_grad():
            engine.model.model.norm.weight.fill_(50.0)
        out = engine.generate([[{"role": "user", "content": "hi"}]], GenParams(max_new_tokens=20))
    finally:
        lm.weight.data.copy_(saved)
        with torch.no_grad():
            engine.model.model.norm.weight.fill_(1.0)
    assert out == [""]


def test_read_requests_errors(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"prompt": "a"}\n{"nope": 1}\n')
    with pytest.raises(UserError, match=r"in\.jsonl:2: needs 'messages'"):
        read_requests(f)
    f.write_text('{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n')
    with pytest.raises(UserError, match=r":2: id: 'x' appears twice"):
        read_requests(f)
    f.write_text('{"prompt": "a"}\n{bad json\n')
    with pytest.raises(UserError, match=r":2: not valid JSON"):
        read_requests(f)
    f.write_text('{"messages": [{"role": "user", "content": "a"}, null]}\n')
    with pytest.raises(UserError, match=r":1: messages\[1\]: needs a role and a string content, got null"):
        read_requests(f)
    f.write_text('{"messages": [{"role": "user", "content": null}]}\n')
    with pytest.raises(UserError, match=r':1: messages\[0\]: .*got \{"role": "user", "content": null\}'):
        read_requests(f)


def test_torn_tail_is_cut(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "1", "response": "a"}\n{"id": "2", "response": "b"}\n{"id": "3", "resp')
    assert done_ids(out, {"1", "2", "3"}) == {"1", "2"}
    assert out.read_text().endswith('"b"}\n')


@pytest.mark.parametrize("text", [
    "notes I wrote by hand\n",                                    # not JSONL
    '{"a": 1}\n',                                                  # JSON, no ids
    '{"id": "9", "response": "x"}\n',                              # ids of another input
    '{"id": "1", "response": "a"}\nmy notes\n{"id": "2", "response": "b"}\n',  # foreign line in the middle
    '{"id": "1"}\n',                                               # an id but no response
    "half a line",                                                # one unterminated line, nothing of ours
])
def test_foreign_output_is_refused_untouched(tmp_path, text):
    out = tmp_path / "out.jsonl"
    out.write_text(text)
    with pytest.raises(UserError, match="was not written by predict for this input"):
        done_ids(out, {"1", "2", "3"})
    assert out.read_text() == text


def test_unparseable_last_line_after_ours_is_cut(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "1", "response": "a"}\n{"id": "2", "resp\n')
    assert done_ids(out, {"1", "2"}) == {"1"}
    assert out.read_text() == '{"id": "1", "response": "a"}\n'


def test_room_for_answer_is_the_one_context_check(engine):
    from tunesmith.infer.context import ContextExceeded, model_context, room_for_answer

    assert model_context(engine.model) == 2048 and model_context(engine.model, 100) == 100  # serve's max_model_len
    assert room_for_answer(100, 2048, 256) == 1948
    assert room_for_answer(100, None, 10**9) is None  # unknown context: nothing to check
    with pytest.raises(ContextExceeded, match="prompt is 1,900 tokens; with max_new_tokens 256 it exceeds the "
                                              "model's context of 2,048") as e:
        room_for_answer(1900, 2048, 256)
    assert not e.value.prompt_alone
    with pytest.raises(ContextExceeded) as e:
        room_for_answer(2048, 2048, None, "max_tokens")
    assert e.value.prompt_alone
    assert room_for_answer(2047, 2048) == 1


def test_predict_refuses_an_over_long_row_before_any_generation(engine, tiny_model, tmp_path, monkeypatch):
    from tunesmith.infer import predict as P

    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"prompt": "short"}) + "\n" + json.dumps({"prompt": "word " * 1900}) + "\n")
    monkeypatch.setattr(P.Engine, "load", classmethod(lambda cls, *a, **k: engine))
    monkeypatch.setattr(P.Engine, "answers", lambda *a, **k: pytest.fail("generated before the check"))
    cfg = P.PredictConfig(model=str(tiny_model), input=str(inp), output=str(out), progress=False)
    with pytest.raises(UserError, match=r"in\.jsonl:2: prompt is 1,9\d\d tokens; with max_new_tokens 256 it "
                                        r"exceeds the model's context of 2,048"):
        P.predict(cfg)
    assert not out.exists()
    # The same row fits once the answer is short enough: the check counts prompt + max_new_tokens.
    monkeypatch.setattr(P.Engine, "answers", lambda self, batch, p: iter(enumerate(["ok"] * len(batch))))
    assert P.predict(cfg.model_copy(update={"gen": GenParams(max_new_tokens=16)})) == 0
    assert [json.loads(x)["response"] for x in out.read_text().splitlines()] == ["ok", "ok"]


def test_predict_killed_and_rerun_ends_with_each_id_once(tiny_model, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [{"prompt": f"question number {i}"} if i % 2 else {"messages": [{"role": "user", "content": f"q{i}"}]}
            for i in range(50)]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, "-m", "tunesmith.cli", "predict", f"model={tiny_model}", f"input={inp}", f"output={out}",
           "batch_size=2", "gen.max_new_tokens=24", "progress=false"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 6):
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    partial = out.read_text().count("\n")
    assert 0 < partial < 50, "the kill must land midway"
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    ids = [json.loads(x)["id"] for x in lines]
    assert len(lines) == 50 and sorted(ids, key=int) == [str(i) for i in range(1, 51)]
    first = json.loads(lines[0])
    assert "response" in first and ("prompt" in first or "messages" in first)


@pytest.mark.slow
def test_embedded_model_knows_paris():
    r = subprocess.run([sys.executable, "-m", "tunesmith.cli", "chat", "smollm2-135m-instruct", "--prompt",
                        "What is the capital of France?"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout

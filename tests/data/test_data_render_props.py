"""Property tests of rendering, for every source format and three template families:

(a) decoding each run of label tokens gives back exactly one assistant turn (as the
    template renders it after its generation prompt) plus <|im_end|>, and nothing else;
(b) input_ids equal ``apply_chat_template(messages, tokenize=True)`` on the same messages.

Rows are generated as abstract conversations, written as a file of the format by the small
writers below (independent of tunesmith's own converters), then loaded and rendered.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from data_strategies import Answer, answers, conversations, inline, tool_decl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith.data import Conversation, DatasetConfig, load_dataset, render, template_messages
from tunesmith.data.types import PreferencePair

EOT = "<|im_end|>"


# ---- writers: abstract conversation → one row of each format --------------------------------------

def write_alpaca(system, turns, draw):
    pairs = [(turns[k][1], turns[k + 1][1]) for k in range(0, len(turns), 2)]
    row = {"instruction": pairs[-1][0], "output": inline(pairs[-1][1])}
    if draw(st.booleans()):
        row["input"] = ""
    if pairs[:-1]:
        row["history"] = [[q, inline(a)] for q, a in pairs[:-1]]
    if system:
        row["system"] = system
    return row


def write_sharegpt(system, turns, draw):
    conv = []
    for role, x in turns:
        if role == "assistant" and x.calls:
            calls = [{"name": n, "arguments": args} for n, args in x.calls]
            conv.append({"from": "function_call", "value": json.dumps(calls[0] if len(calls) == 1 else calls)})
        else:
            conv.append({"from": {"user": "human", "assistant": "gpt", "tool": "observation"}[role],
                         "value": inline(x) if role == "assistant" else x})
    row = {"conversations": conv}
    if system:
        row["system"] = system
    if tool_decl(turns):
        row["tools"] = json.dumps([t["function"] for t in tool_decl(turns)])  # LLaMA-Factory's bare schemas
    return row


def write_messages(system, turns, draw):
    msgs = [{"role": "system", "content": system}] if system else []
    for role, x in turns:
        if role != "assistant":
            msgs.append({"role": role, "content": x})
            continue
        m = {"role": "assistant", "content": x.content}
        if x.reasoning is not None and draw(st.booleans()):
            m["reasoning_content"] = x.reasoning
        else:
            m["content"] = inline(x)
        if x.calls:
            as_text = draw(st.booleans())
            m["tool_calls"] = [{"type": "function", "function": {
                "name": n, "arguments": json.dumps(args) if as_text else args}} for n, args in x.calls]
        msgs.append(m)
    row = {"messages": msgs}
    if tool_decl(turns):
        row["tools"] = tool_decl(turns)
    return row


def write_prompt_completion(system, turns, draw):
    return {"prompt": turns[0][1], "completion": inline(turns[1][1])}


FORMATS = {  # name → (writer, multi-turn, tool calls)
    "alpaca": (write_alpaca, True, False),
    "sharegpt": (write_sharegpt, True, True),
    "messages": (write_messages, True, True),
    "prompt_completion": (write_prompt_completion, False, False),
}


def expected_turns(family: str, turns, thinking: bool) -> list[str]:
    """What each assistant turn must decode to, read off the template family's rules."""
    last_user = max(k for k, (role, _) in enumerate(turns) if role == "user")
    out = []
    for k, (role, a) in enumerate(turns):
        if role != "assistant":
            continue
        calls = [(n, json.dumps(args, ensure_ascii=False)) for n, args in a.calls or []]
        if family in ("smollm2", "qwen25"):
            body = inline(a)
            if family == "qwen25" and calls:
                tc = "".join(f'\n<tool_call>\n{{"name": "{n}", "arguments": {s}}}\n</tool_call>' for n, s in calls)
                body = body + tc if body else tc[1:]  # the header's newline is the first one
        else:
            rc = a.reasoning or ""
            think_form = k > last_user and (k == len(turns) - 1 or bool(rc))
            body = f"<think>\n{rc}\n</think>\n\n{a.content}" if think_form else a.content
            for j, (n, s) in enumerate(calls):
                sep = "\n" if j or a.content else ""
                body += sep + f'<tool_call>\n{{"name": "{n}", "arguments": {s}}}\n</tool_call>'
            if not thinking and body.startswith("<think>\n\n</think>\n\n"):
                body = body[len("<think>\n\n</think>\n\n"):]  # part of the non-thinking generation prompt
        out.append(body + EOT)
    return out


def label_runs(row: dict, tok) -> list[str]:
    runs, cur = [], []
    for tid, lab in zip(row["input_ids"], row["labels"]):
        if lab != -100:
            assert lab == tid
            cur.append(tid)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


def load_one(row: dict, fmt: str):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rows.jsonl"
        path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
        loaded = load_dataset(DatasetConfig(path=str(path)))
    assert not loaded.problems, [str(p) for p in loaded.problems]
    assert len(loaded.rows) == 1
    return loaded.rows[0]


def check_rendering(conv: Conversation, turns, tok, family: str, mask_history: bool) -> None:
    row = render(conv, tok, cutoff_len=100_000, mask_history=mask_history)
    thinking = any(a.reasoning for role, a in turns if role == "assistant")
    want = expected_turns(family, turns, thinking)
    assert label_runs(row, tok) == (want[-1:] if mask_history else want)
    msgs, kwargs = template_messages(conv, tok)
    ref = tok.apply_chat_template(msgs, tools=conv.tools, tokenize=True, **kwargs)["input_ids"]
    assert row["input_ids"] == list(ref)


FAMILIES = ["smollm2", "qwen25", "qwen3"]
PROPS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fmt", list(FORMATS))
@PROPS
@given(data=st.data())
def test_labels_and_ids_match_template(tokenizers, family, fmt, data):
    writer, multi, tools = FORMATS[fmt]
    system, turns = data.draw(conversations(multi, tools))
    conv = load_one(writer(system, turns, data.draw), fmt)
    check_rendering(conv, turns, tokenizers[family], family, data.draw(st.booleans()))


@pytest.mark.parametrize("family", FAMILIES)
@PROPS
@given(data=st.data())
def test_preference_pairs_render_both_answers(tokenizers, family, data):
    system, turns = data.draw(conversations(multi=True))
    rejected = data.draw(answers().filter(lambda a: inline(a) != inline(turns[-1][1])))
    prompt = turns[:-1]
    if data.draw(st.booleans()):  # alpaca form (LLaMA-Factory ranking)
        row = write_alpaca(system, turns, data.draw)
        row["chosen"], row["rejected"] = row.pop("output"), inline(rejected)
    else:  # a message list prompt, answers as messages
        row = write_messages(system, prompt + [("assistant", Answer("x"))], data.draw)
        row["messages"].pop()
        row["chosen"] = {"role": "assistant", "content": inline(turns[-1][1])}
        row["rejected"] = {"role": "assistant", "content": inline(rejected)}
    pair = load_one(row, "preference")
    assert isinstance(pair, PreferencePair)
    tok = tokenizers[family]
    for answer, turn in ((turns[-1][1], pair.chosen), (rejected, pair.rejected)):
        conv = Conversation(pair.prompt.turns + [turn], pair.prompt.system, pair.prompt.tools, pair.source)
        check_rendering(conv, prompt + [("assistant", answer)], tok, family, mask_history=True)

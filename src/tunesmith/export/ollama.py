"""An Ollama ``Modelfile`` (and a README for Ollama and Jan) beside exported GGUF files.

Ollama renders prompts with a Go ``text/template``, not the model's Jinja chat template, so a
Modelfile that loses the template or a stop string is the usual cause of "it answers badly in
Ollama". Arbitrary Jinja cannot be translated; instead tunesmith ships Go templates for the chat
formats its supported families use (ChatML as in SmolLM2 / Qwen2, Qwen3 with its thinking switch,
Llama 3) and picks the one whose rendering equals ``apply_chat_template`` on every conversation of
``CONVERSATIONS``. Each format is written twice on purpose: as the Go template Ollama runs, and as
a Python twin used for that pick here; tests/export/render_template.go renders the Go text with
the real ``text/template`` and checks it against ``apply_chat_template`` too, so the twins cannot
drift apart unnoticed. When no format matches, the Modelfile has no TEMPLATE and says why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Probe conversations: system / no system, multi-turn, thinking unset / off / on, non-Latin text.
# ``think`` is Ollama's ``think`` request field (None: unset), i.e. ``enable_thinking`` in Jinja.
CONVERSATIONS: list[tuple[list[dict], bool | None]] = [
    ([{"role": "user", "content": "Who are you?"}], None),
    ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}], None),
    ([{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
      {"role": "user", "content": "And times 3?"}], None),
    ([{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"},
      {"role": "assistant", "content": "Bonjour !"}, {"role": "user", "content": "Thanks"}], None),
    ([{"role": "user", "content": "Think: is 91 prime?"}], False),
    ([{"role": "user", "content": "Think: is 91 prime?"}], True),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "用一句话介绍你自己。"},
      {"role": "assistant", "content": "我是一个助手。"}, {"role": "user", "content": "谢谢"}], False),
]

# The generation prompt goes after the last message when that message is not the assistant's.
_LAST = '(eq (len (slice $.Messages $i)) 1)'
_CHATML_TURNS = ('{{- range $i, $m := .Messages }}<|im_start|>{{ $m.Role }}\n{{ $m.Content }}<|im_end|>\n'
                 '{{ if and ' + _LAST + ' (ne $m.Role "assistant") }}<|im_start|>assistant\n')
_NO_THINK = '{{ if and $.IsThinkSet (not $.Think) }}<think>\n\n</think>\n\n{{ end }}'


def _chatml_go(default_system: str | None) -> str:
    head = ""
    if default_system is not None:  # SmolLM2 / Qwen2.5 put a system turn first when the chat has none
        head = ('{{- if .Messages }}{{ if ne (index .Messages 0).Role "system" }}<|im_start|>system\n'
                + default_system + '<|im_end|>\n{{ end }}{{ end }}')
    return head + _CHATML_TURNS + '{{ end }}{{ end }}'


def _chatml_py(msgs: list[dict], default_system: str | None, think: bool | None, gen_think: bool = False) -> str:
    out = ""
    if default_system is not None and msgs and msgs[0]["role"] != "system":
        out += f"<|im_start|>system\n{default_system}<|im_end|>\n"
    for m in msgs:
        out += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    if msgs and msgs[-1]["role"] != "assistant":
        out += "<|im_start|>assistant\n"
        if gen_think and think is False:
            out += "<think>\n\n</think>\n\n"
    return out


def _llama3_go(default_system: str | None) -> str:
    return ('{{- range $i, $m := .Messages }}<|start_header_id|>{{ $m.Role }}<|end_header_id|>\n\n'
            '{{ $m.Content }}<|eot_id|>{{ if and ' + _LAST + ' (ne $m.Role "assistant") }}'
            '<|start_header_id|>assistant<|end_header_id|>\n\n{{ end }}{{ end }}')


def _llama3_py(msgs: list[dict], default_system: str | None, think: bool | None) -> str:
    out = "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in msgs)
    if msgs and msgs[-1]["role"] != "assistant":
        out += "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return out


@dataclass(frozen=True)
class Format:
    name: str
    go: Callable[[str | None], str]                 # default system → Ollama TEMPLATE text
    py: Callable[[list[dict], str | None, bool | None], str]
    adds_bos: bool = False  # the template starts with BOS, which llama.cpp/Ollama add when tokenizing
    thinking: bool = False


FORMATS = [
    Format("chatml", _chatml_go, _chatml_py),
    Format("qwen3", lambda d: _CHATML_TURNS + _NO_THINK + '{{ end }}{{ end }}',
           lambda m, d, t: _chatml_py(m, None, t, gen_think=True), thinking=True),
    Format("llama3", _llama3_go, _llama3_py, adds_bos=True),
]


def jinja_render(tok, msgs: list[dict], think: bool | None) -> str:
    kw = {} if think is None or "enable_thinking" not in (tok.chat_template or "") else {"enable_thinking": think}
    return tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, **kw)


def default_system(tok) -> str | None:
    """The system text the template inserts when a chat has none (SmolLM2, Qwen2.5), found by
    rendering one user turn with ChatML markers; None when it inserts none."""
    text = jinja_render(tok, [{"role": "user", "content": "Zq7xWv"}], None)
    head = "<|im_start|>system\n"
    if text.startswith(head) and "<|im_end|>\n<|im_start|>user\nZq7xWv" in text:
        return text[len(head):text.index("<|im_end|>\n<|im_start|>user\nZq7xWv")]
    return None


def pick_format(tok) -> tuple[Format, str | None] | None:
    """The first format whose rendering equals the tokenizer's template on every probe
    conversation (with ``None`` when none does), and the default system text it needs."""
    if not tok.chat_template:
        return None
    dsys = default_system(tok)
    for fmt in FORMATS:
        if all(_same(tok, fmt, fmt.py(msgs, dsys, think), msgs, think) for msgs, think in CONVERSATIONS):
            return fmt, dsys
    return None


def _same(tok, fmt: Format, ours: str, msgs: list[dict], think: bool | None) -> bool:
    try:
        theirs = jinja_render(tok, msgs, think)
    except Exception:  # a template that refuses a probe (no system role…) is not one we can mirror
        return False
    if fmt.adds_bos and tok.bos_token and theirs.startswith(tok.bos_token):
        theirs = theirs[len(tok.bos_token):]
    return ours == theirs


def stop_strings(tok) -> list[str]:
    """Every string that ends an assistant turn: the template's end-of-turn token and the eos."""
    from ..models.template import end_of_turn_ids

    out = []
    for tid in end_of_turn_ids(tok):
        s = tok.convert_ids_to_tokens(tid)
        if s and s not in out:
            out.append(s)
    return out


def modelfile(gguf_name: str, tok, system: str | None) -> tuple[str, str | None]:
    """The Modelfile text and the format's name (None: no TEMPLATE could be matched)."""
    picked = pick_format(tok)
    lines = [f"FROM ./{gguf_name}", ""]
    if picked:
        fmt, dsys = picked
        lines += [f'TEMPLATE """{fmt.go(dsys)}"""', ""]
    else:
        lines += ["# No TEMPLATE: the chat template matches none of tunesmith's Go templates (chatml, qwen3, "
                  "llama3); Ollama falls back to its own guess from the GGUF's template. See README.md.", ""]
    lines += [f'PARAMETER stop "{s}"' for s in stop_strings(tok)]
    if system:
        lines += ["", f'SYSTEM """{system}"""']
    return "\n".join(lines) + "\n", (picked[0].name if picked else None)


def readme(name: str, files: list[str], from_file: str, fmt: str | None, system: str | None) -> str:
    tmpl = (f"The Modelfile's TEMPLATE is tunesmith's `{fmt}` Go template, checked at export to render "
            "exactly like the model's own chat template." if fmt else
            "The Modelfile has no TEMPLATE: the model's chat template matches none of tunesmith's Go templates "
            "(chatml, qwen3, llama3), so Ollama guesses one from the GGUF; check its answers, or write a TEMPLATE.")
    sys_line = "The Modelfile sets the run's default system prompt (SYSTEM).\n" if system else ""
    listing = "\n".join(f"- `{f}`" for f in files)
    return f"""# {name}: GGUF files for llama.cpp, Ollama and Jan

Written by `tunesmith export gguf` with llama.cpp's own converter and quantizer. Each GGUF
carries the tokenizer, the chat template training used, and its BOS/EOS/end-of-turn tokens.

{listing}

## Ollama

    ollama create {name} -f Modelfile
    ollama run {name}

`Modelfile` points at `{from_file}`; edit its `FROM` line to use another file. {tmpl}
{sys_line}
## Jan

Settings → Model Providers → llama.cpp → Import (or Hub → Import model), pick `{from_file}`
and keep "Link" or "Duplicate". Jan reads the chat template and stop tokens from the GGUF.

## llama.cpp

    llama-cli -m {from_file} -cnv
"""

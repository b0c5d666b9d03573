"""``tunesmith chat``: interactive multi-turn chat with streamed tokens."""
from __future__ import annotations

import sys

from pydantic import Field

from ..config import Device, Section
from ..models import DEFAULT_MODEL
from .engine import Engine, GenParams

HELP = "commands: /reset (new conversation), /system TEXT (set the system prompt), /exit"


class ChatConfig(Section):
    model: str = Field(DEFAULT_MODEL, description="model: built-in alias, HF folder, .gguf file, hub id or run folder")
    adapter: list[str] = Field(default_factory=list, description="PEFT adapter folder(s) applied in order")
    system: str | None = Field(None, description="system prompt (else the template's default)")
    prompt: str | None = Field(None, description="answer this one prompt and exit (scriptable)")
    dtype: str | None = Field(None, description="bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)")
    device: Device = Field(None, description="cpu, cuda, cuda:N, mps or auto (default: cuda if present)")
    trust_remote_code: bool = Field(False, description="run model code shipped with the model folder")
    gen: GenParams = Field(default_factory=GenParams, description="generation parameters")


def chat(cfg: ChatConfig) -> int:
    engine = Engine.load(cfg.model, cfg.adapter, cfg.dtype, cfg.device, cfg.trust_remote_code)
    system = cfg.system
    history: list[dict] = []

    def answer(text: str) -> None:
        msgs = ([{"role": "system", "content": system}] if system else []) + history + [{"role": "user", "content": text}]
        pieces = []
        for piece in engine.stream(msgs, cfg.gen):
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        history.extend([{"role": "user", "content": text}, {"role": "assistant", "content": "".join(pieces).strip()}])

    if cfg.prompt is not None:
        answer(cfg.prompt)
        return 0
    print(HELP)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            return 0
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset":
            history.clear()
            print("(new conversation)")
        elif line.startswith("/system"):
            system = line[len("/system"):].strip() or None
            history.clear()
            print(f"(system prompt {'set' if system else 'cleared'}; new conversation)")
        elif line.startswith("/"):
            print(HELP)
        else:
            sys.stdout.write("assistant> ")
            answer(line)

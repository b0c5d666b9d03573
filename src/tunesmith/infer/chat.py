"""``tunesmith chat``: interactive multi-turn chat with streamed tokens."""
from __future__ import annotations

import sys

from pydantic import Field

from ..config import AdaptedModelSection
from .engine import Engine
from .sampling import GenParams

HELP = "commands: /reset (new conversation), /system TEXT (set the system prompt), /exit"


class ChatConfig(AdaptedModelSection):
    system: str | None = Field(None, description="system prompt (else the template's default)")
    prompt: str | None = Field(None, description="answer this one prompt and exit (scriptable)")
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

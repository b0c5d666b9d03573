"""A LLaMA-Factory-style ``data/`` folder, written the way LF ships its demos: one
dataset of each kind tunesmith must read, or must name as unsupported, never misread.

``build_lf_folder(root)`` writes ``root/data`` and returns it; ``VERDICTS`` is what
``tunesmith data check`` must say of each dataset; ``HUB_ONLY`` are the entries with no local
file (hub URLs only), which a check of the whole folder names in one note."""
from __future__ import annotations

import json
from pathlib import Path

ALPACA = [{"instruction": f"Name a colour, number {i}.", "input": "", "output": f"Colour {i} is blue."}
          for i in range(5)]
DUPLICATES = 2  # rows 1 and 2 again, as LF's alpaca_en_demo repeats rows

TOOLS = [{"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
GLAIVE = [{"conversations": [
    {"from": "human", "value": f"Weather in city {i}?"},
    {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": f"c{i}"}})},
    {"from": "observation", "value": json.dumps({"temp": 20 + i})},
    {"from": "gpt", "value": f"It is {20 + i} degrees."}], "tools": json.dumps(TOOLS)} for i in range(3)]

DPO = [{"conversations": [{"from": "human", "value": f"Greet me {i}"}],
        "chosen": {"from": "gpt", "value": "Hello!"}, "rejected": {"from": "gpt", "value": "Go away."}}
       for i in range(3)]

KTO = [{"messages": [{"content": f"Say hi {i}", "role": "user"}, {"content": "Hi!", "role": "assistant"}],
        "label": i % 2 == 0} for i in range(4)]

MLLM = [{"messages": [{"content": "<image>Who is in the picture?", "role": "user"},
                      {"content": "A footballer.", "role": "assistant"}], "images": ["mllm_demo_data/1.jpg"]}]

V1 = [{"messages": [{"role": "user", "content": [{"type": "text", "value": "Two plus "},
                                                 {"type": "text", "value": "two?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "Four."}]}]}]

C4 = [{"text": f"Document {i}: the quick brown fox jumps over the lazy dog. " * 3} for i in range(6)]
WIKI = "First article about rivers and lakes.\n\nSecond article about mountains.\nThird article about seas.\n"

IDENTITY = [{"instruction": "hi", "input": "", "output": "Hello! I am {{name}}, an AI assistant developed by "
             "{{author}}."},
            {"instruction": "Who are you?", "input": "", "output": "I am {{name}}, made by {{author}}."}]

# OpenAI-style role tags, as LLaMA-Factory's kto/mllm entries spell them out.
ROLE_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
INFO = {
    "alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
    "glaive_toolcall_en_demo": {"file_name": "glaive_toolcall_en_demo.json", "formatting": "sharegpt",
                                "columns": {"messages": "conversations", "tools": "tools"}},
    "dpo_en_demo": {"file_name": "dpo_en_demo.json", "ranking": True, "formatting": "sharegpt",
                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
    "kto_en_demo": {"file_name": "kto_en_demo.json", "formatting": "sharegpt",
                    "columns": {"messages": "messages", "kto_tag": "label"},
                    "tags": ROLE_TAGS},
    "kto_unmapped": {"file_name": "kto_en_demo.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
                     "tags": ROLE_TAGS},
    "mllm_demo": {"file_name": "mllm_demo.json", "formatting": "sharegpt",
                  "columns": {"messages": "messages", "images": "images"},
                  "tags": ROLE_TAGS},
    "mllm_unmapped": {"file_name": "mllm_demo.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
                      "tags": ROLE_TAGS},
    "v1_sft_demo": {"file_name": "v1_sft_demo.jsonl", "formatting": "openai", "columns": {"messages": "messages"}},
    "c4_demo": {"file_name": "c4_demo.jsonl", "columns": {"prompt": "text"}},
    "wiki_demo": {"file_name": "wiki_demo.txt", "columns": {"prompt": "text"}},
    "alpaca_en": {"hf_hub_url": "llamafactory/alpaca_en", "ms_hub_url": "llamafactory/alpaca_en"},
    "deepctrl": {"ms_hub_url": "deepctrl/deepctrl-sft-data"},
    "alpaca_om": {"om_hub_url": "HaM/alpaca_en"},
    "scripted": {"script_url": "scripts/scripted", "columns": {"prompt": "text"}},
    "identity": {"file_name": "identity.json"},
    "lost": {"file_name": "lost.json"},
}

VERDICTS = {"alpaca_en_demo": "ok, warnings", "glaive_toolcall_en_demo": "ok", "dpo_en_demo": "ok",
            "kto_en_demo": "unsupported", "kto_unmapped": "unsupported", "mllm_demo": "unsupported",
            "mllm_unmapped": "unsupported", "v1_sft_demo": "ok", "c4_demo": "ok", "wiki_demo": "ok",
            "identity": "ok, warnings", "lost": "failed"}
HUB_ONLY = {"alpaca_en": "hf_hub_url", "deepctrl": "ms_hub_url", "alpaca_om": "om_hub_url", "scripted": "script_url"}


def build_lf_folder(root: Path) -> Path:
    """Write ``root/data`` (dataset_info.json and every file it names) and return it."""
    d = Path(root) / "data"
    d.mkdir(parents=True, exist_ok=True)

    def dump(name: str, rows, lines: bool = False) -> None:
        text = ("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) if lines
                else json.dumps(rows, ensure_ascii=False, indent=2))
        (d / name).write_text(text, encoding="utf-8")

    (d / "dataset_info.json").write_text(json.dumps(INFO, indent=2), encoding="utf-8")
    dump("alpaca_en_demo.json", ALPACA + ALPACA[1:1 + DUPLICATES])
    dump("glaive_toolcall_en_demo.json", GLAIVE)
    dump("dpo_en_demo.json", DPO)
    dump("kto_en_demo.json", KTO)
    dump("mllm_demo.json", MLLM)
    dump("v1_sft_demo.jsonl", V1, lines=True)
    dump("c4_demo.jsonl", C4, lines=True)
    (d / "wiki_demo.txt").write_text(WIKI, encoding="utf-8")
    dump("identity.json", IDENTITY)
    return d

"""``tunesmith export gguf``: a model (plus adapters) → GGUF files, an Ollama Modelfile and a README.

Adapters are folded in by the verified merge (``export merge``) first. llama.cpp's own converter
writes the f16 (or bf16) GGUF, with the tokenizer and chat template of the run (the tokenizer
saved beside the last adapter, which the merge keeps); llama.cpp's quantizer makes q8_0 and the
k-quants from the f16 file. Before anything is published, llama.cpp itself reads the f16 file
back: it must tokenize chat prompts into exactly the HF tokenizer's ids and end turns on one of
the template's end-of-turn tokens. Everything is written into a temp folder beside ``out`` and
renamed into place only when complete.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from pydantic import Field, field_validator

from ..config import AdaptedModelSection, Device
from ..errors import UserError
from ..home import tunesmith_home
from ..fsutil import build_dir_for, check_out_dir, fix_modes, publish_dir, save_config, write_atomic
from ..manifest import env_info, now, write_manifest
from . import llama_tools as lt

TYPES = (*lt.CONVERTER_TYPES, *lt.QUANTS)
# Which file the Modelfile points at: the smallest of those written, by this preference.
_PREFER = ("q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q6_k", "q8_0", "q4_0", "q5_0", "q3_k_m", "q2_k", "f16", "bf16")


class GgufConfig(AdaptedModelSection):
    model: str | None = Field(None, description="base model (alias, HF folder, .gguf, hub id); unset: the base the "
                                                "first adapter names")
    out: str = Field(..., description="folder for the GGUF files, Modelfile and README (must not exist or be empty)")
    quant: list[str] = Field(["q4_k_m"], min_length=1, json_schema_extra={"items": {"type": "string", "enum": list(TYPES)}},
                             description="file types to write: f16, bf16, q8_0, q4_k_m, "
                             "q5_k_m, q6_k, … (the f16 file is made first either way and kept only when listed)")
    name: str | None = Field(None, description="model name in the GGUF metadata and the Ollama README; "
                                               "unset: out's folder name")
    system: str | None = Field(None, description="default system prompt for the Modelfile's SYSTEM line")
    overwrite: bool = Field(False, description="replace out when it already holds files")
    device: Device = Field(None, description="device for the merge when adapters are given")
    # dtype (inherited): the merged weights' dtype before conversion; unset: the base's own

    @field_validator("quant", mode="before")
    @classmethod
    def _split(cls, v):
        return [s.strip().lower() for s in v.split(",")] if isinstance(v, str) else v

    @field_validator("quant")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for q in v:
            if q not in TYPES:
                raise ValueError(f"'{q}' is not a GGUF type tunesmith writes: choose from {', '.join(TYPES)}")
        return list(dict.fromkeys(v))


def export_gguf(cfg: GgufConfig) -> int:
    from ..models.load import base_of, check_adapter
    from ..models.resolve import resolve_model

    t0, started = time.time(), now()
    out = Path(cfg.out).expanduser().resolve()
    adapters = [check_adapter(a) for a in cfg.adapter]
    spec = cfg.model or (base_of(adapters[0]) if adapters else None)
    if spec is None:
        raise UserError("export gguf needs --model (or --adapter, whose base is then used)")
    check_out_dir(out, cfg.overwrite, adapters)
    lt.llama_cpp()  # one line before any work when llama-cpp-python is missing
    model_dir = resolve_model(spec).resolve()
    check_out_dir(out, cfg.overwrite, [model_dir])
    tools = lt.tools_dir(tunesmith_home())
    _check_architecture(model_dir, tools)
    name = cfg.name or out.name

    tmp = build_dir_for(out)  # and a killed earlier run's build folder for this out is removed
    shutil.rmtree(tmp, ignore_errors=True)
    made = [p for p in out.parents if not p.exists()]  # removed again when the export fails
    try:
        tmp.mkdir(parents=True)
        src, merge_info = model_dir, None
        if adapters:
            src, merge_info = _merge(cfg, spec, adapters, tmp / "merged")
        timings, files = {}, {}
        f16 = tmp / "model-f16.gguf"
        t = time.time()
        lt.convert(tools, src, f16, "f16", name)
        timings["convert_f16_s"] = round(time.time() - t, 2)
        tok = _tokenizer(src)
        checks = _verify(f16, tok)
        if "bf16" in cfg.quant:
            t = time.time()
            lt.convert(tools, src, tmp / "model-bf16.gguf", "bf16", name)
            timings["convert_bf16_s"] = round(time.time() - t, 2)
        for q in cfg.quant:
            if q in lt.QUANTS:
                t = time.time()
                lt.quantize(f16, tmp / f"model-{q}.gguf", q)
                timings[f"quantize_{q}_s"] = round(time.time() - t, 2)
        if "f16" not in cfg.quant:
            f16.unlink()
        if merge_info:
            shutil.rmtree(tmp / "merged")
        for q in cfg.quant:
            f = tmp / f"model-{q}.gguf"
            files[f.name] = {"type": q, "bytes": f.stat().st_size}
        from_file = f"model-{next(q for q in _PREFER if q in cfg.quant)}.gguf"
        from .ollama import modelfile, readme

        text, fmt = modelfile(from_file, tok, cfg.system)
        write_atomic(tmp / "Modelfile", text)
        write_atomic(tmp / "README.md", readme(name, list(files), from_file, fmt, cfg.system))
        save_config(cfg, tmp / "config.yaml")
        fix_modes(tmp)
        write_manifest(tmp, {
            "kind": "export_gguf", "status": "done", "name": name,
            "base_model": {"spec": spec, "path": str(model_dir)}, "adapters": [str(a) for a in adapters],
            "merge": merge_info, "files": files, "ollama_template": fmt, "verification": checks,
            "llama_cpp_python": lt.version(), "timings": timings, "started": started, "finished": now(),
            "seconds": round(time.time() - t0, 1), "env": env_info()})
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in made:
            shutil.rmtree(p, ignore_errors=True)
        raise
    if fmt is None:
        print("note: the chat template matches none of tunesmith's Ollama templates: the Modelfile has no TEMPLATE "
              "(see README.md)", file=sys.stderr)
    sizes = ", ".join(f"{f} {v['bytes'] / 1e6:.1f} MB" for f, v in files.items())
    print(f"exported {spec} → {out}: {sizes}; Modelfile → {from_file} (template: {fmt or 'none'})")
    return 0


def _check_architecture(model_dir: Path, tools: Path) -> None:
    cfg = json.loads(model_dir.joinpath("config.json").read_text())
    archs = cfg.get("architectures") or []
    supported = lt.supported_architectures(tools)
    if supported and not any(a in supported for a in archs):
        raise UserError(f"{model_dir}: architecture {', '.join(archs) or '(none named in config.json)'} is not "
                        f"supported by llama.cpp's converter (llama-cpp-python {lt.version()}); export an HF folder "
                        "with export merge instead")


def _merge(cfg: GgufConfig, spec: str, adapters: list[Path], dest: Path) -> tuple[Path, dict]:
    from .merge import MergeConfig, merge

    merge(MergeConfig(model=spec, adapter=[str(a) for a in adapters], out=str(dest), device=cfg.device, dtype=cfg.dtype,
                      trust_remote_code=cfg.trust_remote_code))
    m = json.loads(dest.joinpath("manifest.json").read_text())
    return dest, {"verification": m.get("verification")}


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _verify(gguf: Path, tok) -> dict:
    """llama.cpp reads the file back: chat prompts → the HF tokenizer's ids, exactly, and its
    end-of-generation token is one that ends a turn in the template."""
    from ..models.template import end_of_turn_ids, supports_thinking
    from .merge import PROBES

    lc = lt.llama_cpp()
    from llama_cpp._internals import LlamaModel

    params = lc.llama_model_default_params()
    params.vocab_only = True  # the vocabulary and its metadata only: no weights, no context
    model = LlamaModel(path_model=str(gguf), params=params, verbose=False)
    try:
        n = 0
        for msgs in PROBES if tok.chat_template else []:
            text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            got = model.tokenize(text.encode(), add_bos=False, special=True)
            if got != ids:
                raise UserError(f"llama.cpp tokenizes the exported {gguf.name} differently from the HF tokenizer "
                                f"({len(got)} vs {len(ids)} tokens on a chat probe); nothing was written")
            n += 1
        switch = _check_switch(model, tok, gguf) if supports_thinking(tok) else None
        ends = end_of_turn_ids(tok) if tok.chat_template else [tok.eos_token_id]
        if not any(lc.llama_vocab_is_eog(model.vocab, i) for i in ends):
            raise UserError(f"llama.cpp does not end generation on the template's end-of-turn token "
                            f"{tok.convert_ids_to_tokens(ends[0])!r} in the exported {gguf.name}; nothing was written")
        return {"prompts_tokenized_equal": n, "llama_eos": model.token_eos(), "llama_eot": model.token_eot(),
                "template_end_of_turn": ends, **({"thinking_switch": switch} if switch else {})}
    finally:
        model.close()


def _check_switch(model, tok, gguf: Path) -> dict:
    """A template with a thinking switch keeps it in the file: the GGUF's ``tokenizer.chat_template`` is
    the model's, and llama-cpp-python's own Jinja formatter renders the chat probes in both modes
    exactly as ``apply_chat_template`` does, into the same tokens."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from .merge import PROBES

    carried = model.metadata().get("tokenizer.chat_template")
    if carried != tok.chat_template:
        raise UserError(f"the exported {gguf.name} does not carry the model's chat template (its thinking switch "
                        "would be lost); nothing was written")
    text = lambda i: model.detokenize([i], special=True).decode("utf-8", "replace") if i >= 0 else ""  # noqa: E731
    fmt = Jinja2ChatFormatter(carried, eos_token=text(model.token_eos()), bos_token=text(model.token_bos()))
    n = 0
    for msgs in PROBES:
        for think in (True, False):
            want = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, enable_thinking=think)
            got = fmt(messages=msgs, enable_thinking=think).prompt
            if got != want or model.tokenize(got.encode(), add_bos=False, special=True) != \
                    tok(want, add_special_tokens=False)["input_ids"]:
                raise UserError(f"llama.cpp renders the exported {gguf.name}'s chat template with enable_thinking="
                                f"{str(think).lower()} differently from the model's; nothing was written")
            n += 1
    return {"template_carried": True, "prompts_rendered_equal": n}

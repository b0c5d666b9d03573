"""llama.cpp's own tools, from one pinned place: the converter, its ``gguf`` package, the quantizer.

Converter, GGUF writer and loader must be the same llama.cpp: a converter newer than the loader
writes tensors or metadata the loader refuses, an older one misses pre-tokenizers. So all three
come from the installed ``llama-cpp-python`` (the ``tunesmith[gguf]`` extra pins it exactly):

- the quantizer is its ``llama_model_quantize`` (the wheel has no ``llama-quantize`` binary);
- the converter (``convert_hf_to_gguf.py``, its ``conversion/`` package, the vendored ``gguf-py``
  and the chat templates some architectures read) is not in the wheel, only in the sdist of the
  same version, which vendors llama.cpp. ``pip download`` fetches that sdist (pip's cache keeps
  it), and only those files are extracted, atomically, into ``$TUNESMITH_HOME/llama.cpp/<version>``.

The converter runs as a subprocess with the vendored ``gguf-py`` first on ``PYTHONPATH``: the
``gguf`` wheel tunesmith itself depends on (for reading GGUFs) may be another version.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..errors import UserError
from ..fsutil import fix_modes, make_temp_dir

PINNED = "0.3.36"  # keep in step with pyproject's gguf extra
INSTALL_HINT = "pip install 'tunesmith[gguf]' (or make gguf)"

# What the converter reads, relative to the sdist's vendor/llama.cpp/ (checked in the extracted
# tree: the script imports conversion/ and gguf; a few architectures read models/templates/*.jinja).
_KEEP = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/", "models/templates/", "LICENSE")

# Quantized types llama.cpp's quantizer makes from the f16 file (llama.h's LLAMA_FTYPE_MOSTLY_*).
QUANTS = {"q8_0": "Q8_0", "q6_k": "Q6_K", "q5_k_m": "Q5_K_M", "q5_k_s": "Q5_K_S", "q4_k_m": "Q4_K_M",
          "q4_k_s": "Q4_K_S", "q3_k_m": "Q3_K_M", "q2_k": "Q2_K", "q4_0": "Q4_0", "q5_0": "Q5_0"}
CONVERTER_TYPES = ("f16", "bf16")  # written by the converter itself


def llama_cpp():
    """The ``llama_cpp`` module, or one line saying how to get it."""
    try:
        import llama_cpp as mod
    except ImportError:
        raise UserError(f"GGUF export needs llama-cpp-python=={PINNED} (llama.cpp's converter, quantizer and "
                        f"loader): {INSTALL_HINT}") from None
    return mod


def version() -> str:
    return getattr(llama_cpp(), "__version__", PINNED)


def tools_dir(home: Path) -> Path:
    """The converter tree of the installed llama-cpp-python's version, extracted once."""
    ver = version()
    dest = home / "llama.cpp" / f"llama-cpp-python-{ver}"
    if dest.joinpath("convert_hf_to_gguf.py").is_file():
        return dest
    tmp = make_temp_dir(dest)
    try:
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".sdist.") as dl:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                                   "--disable-pip-version-check", "-q", f"llama-cpp-python=={ver}", "-d", dl],
                                  capture_output=True, text=True)
            sdists = list(Path(dl).glob("llama_cpp_python-*.tar.gz"))
            if proc.returncode or not sdists:
                last = (proc.stderr.strip().splitlines() or ["no sdist"])[-1][:200]
                raise UserError(f"could not fetch the llama-cpp-python=={ver} sdist that holds llama.cpp's "
                                f"converter ({last}); check the package index, or run once where it is reachable")
            _extract(sdists[0], tmp)
        if not tmp.joinpath("convert_hf_to_gguf.py").is_file():
            raise UserError(f"the llama-cpp-python=={ver} sdist has no vendor/llama.cpp/convert_hf_to_gguf.py")
        fix_modes(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process finished first: keep theirs
            if not dest.joinpath("convert_hf_to_gguf.py").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _extract(sdist: Path, into: Path) -> None:
    with tarfile.open(sdist) as tar:
        for m in tar.getmembers():
            parts = m.name.split("/", 3)  # llama_cpp_python-X/vendor/llama.cpp/<rel>
            if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"] or not m.isfile():
                continue
            rel = parts[3]
            if not any(rel == k or (k.endswith("/") and rel.startswith(k)) for k in _KEEP):
                continue
            if ".." in Path(rel).parts:
                continue
            target = into / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def supported_architectures(tools: Path) -> set[str]:
    """The HF architectures (config.json ``architectures``) this converter registers."""
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/gguf-py']\n"
            "from conversion import TEXT_MODEL_MAP\n"
            "print('\\n'.join(sorted(TEXT_MODEL_MAP)))")
    proc = subprocess.run([sys.executable, "-c", code, str(tools)], capture_output=True, text=True, env=_env(tools))
    return set(proc.stdout.split()) if proc.returncode == 0 else set()


def _env(tools: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    env["PYTHONPATH"] = os.pathsep.join([str(tools / "gguf-py"), str(tools), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def convert(tools: Path, model_dir: Path, outfile: Path, outtype: str, name: str) -> None:
    """Run llama.cpp's converter: HF folder → one GGUF (f16 or bf16). One line when it refuses."""
    proc = subprocess.run([sys.executable, str(tools / "convert_hf_to_gguf.py"), str(model_dir), "--outfile",
                           str(outfile), "--outtype", outtype, "--model-name", name],
                          capture_output=True, text=True, env=_env(tools))
    if proc.returncode or not outfile.is_file():
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
        if "pre-tokenizer" in proc.stderr or "BPE pre-tokenizer was not recognized" in proc.stderr:
            why = ("its tokenizer's pre-tokenizer is not one llama.cpp knows (the converter hashes it), so "
                   "llama.cpp would tokenize differently")
        raise UserError(f"llama.cpp's converter refused {model_dir}: {why.strip()[:300]}")


def quantize(src: Path, dst: Path, quant: str, threads: int = 0) -> None:
    """llama.cpp's quantizer (``llama_model_quantize``), f16 GGUF → ``quant``. It logs every tensor
    to the process's stderr from C; that goes to a temp file, shown only when it fails."""
    lc = llama_cpp()
    params = lc.llama_model_quantize_default_params()
    params.ftype = getattr(lc, f"LLAMA_FTYPE_MOSTLY_{QUANTS[quant]}")
    params.nthread = threads
    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            rc = lc.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if rc != 0 or not dst.is_file():
            log.seek(0)
            last = (log.read().decode(errors="replace").strip().splitlines() or [""])[-1][:200]
            raise UserError(f"llama.cpp's quantizer failed to make {quant} from {src.name} (code {rc}): {last}")

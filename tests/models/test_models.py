import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tunesmith.errors import UserError
from tunesmith.models import resolve as R
from tunesmith.models.template import end_of_turn_ids, supports_thinking


def test_embedded_alias_resolves_to_safetensors_folder(embedded_dir):
    assert (embedded_dir / "model.safetensors").is_file()
    meta = json.loads((embedded_dir / "tunesmith_import.json").read_text())
    assert meta["sha256"] == R.ALIASES["smollm2-135m-instruct"].sha256
    cfg = json.loads((embedded_dir / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    t = time.time()
    assert R.resolve_model("smollm2-135m-instruct") == embedded_dir
    assert time.time() - t < 1  # no second conversion


@pytest.mark.slow
def test_killed_conversion_leaves_nothing_trusted(ts_home):
    env = {**os.environ, "TUNESMITH_HOME": str(ts_home)}
    code = "from tunesmith.models import resolve_model; resolve_model('smollm2-135m-instruct')"
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dest = ts_home / "models" / "smollm2-135m-instruct"
    deadline = time.time() + 60
    while time.time() < deadline and not any((ts_home / "models").glob(".*tmp*/model.safetensors")):
        time.sleep(0.005)  # kill while the temp folder is being written (a slower poll lost the race under load)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not dest.exists()
    # The next run does not trust the leftover and converts fully.
    got = R.resolve_model("smollm2-135m-instruct")
    assert got == dest and (dest / "config.json").is_file() and (dest / "model.safetensors").is_file()


def test_wrong_checksum_is_refused(ts_home, monkeypatch):
    emb = R.ALIASES["smollm2-135m-instruct"]
    monkeypatch.setitem(R.ALIASES, "smollm2-135m-instruct", R.Embedded(emb.package, emb.filename, "0" * 64))
    with pytest.raises(UserError, match="does not match the expected"):
        R.resolve_model("smollm2-135m-instruct")
    assert not (ts_home / "models" / "smollm2-135m-instruct").exists()


def test_unsupported_gguf_architecture(tmp_path, ts_home):
    import gguf

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(str(path), arch="rwkv6")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UserError, match="architecture 'rwkv6' can't be imported"):
        R.resolve_model(str(path))


def test_bad_model_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no config.json"):
        R.resolve_model(str(tmp_path / "empty"))
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="not a .gguf"):
        R.resolve_model(str(tmp_path / "w.bin"))
    with pytest.raises(UserError, match="not found"):
        R.resolve_model(str(tmp_path / "nothing"))


def test_template_facts(tokenizer):
    eot = end_of_turn_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens(eot[0]) == "<|im_end|>"
    assert not supports_thinking(tokenizer)

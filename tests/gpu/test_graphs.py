"""On CUDA: the static decode step replayed as a CUDA graph gives the eager step's logits bit for
bit, sees LoRA weights changed in place after the capture (a training step between rollouts), and
the engine decodes through one capture by default — the same answers as without the graph."""
import inspect
import queue

import torch

from tunesmith.infer import Engine, GenParams, Job
from tunesmith.infer.graphs import StaticDecoder

from tests.gpu.test_attention import lora_model


class Tok:
    """A tokenizer stand-in for random token ids (the rows are never text)."""
    pad_token_id = 0
    eos_token_id = 2

    def apply_chat_template(self, *args, **kwargs):  # no template: the end of turn is eos alone
        return None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


PROMPTS = [[5, 17, 300, 9], [44, 81, 7], [901, 12, 13, 14, 15, 16], [3]]


def test_the_captured_step_is_the_eager_step_and_reads_weights_changed_in_place():
    model = lora_model().eval()
    dev = torch.device("cuda")
    kw = "cache" if "cache" in inspect.signature(type(model.get_base_model()).forward).parameters else "past_key_values"
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        eager = StaticDecoder(model, 8, 128, dev, kw, graph=False)
        graphed = StaticDecoder(model, 8, 128, dev, kw, graph=True)
        assert graphed.graph is not None and eager.graph is None

        def run(dec, steps=12):
            logits = [dec.prefill(PROMPTS, 0, {"logits_to_keep": 1}).clone()]
            for _ in range(steps):
                nxt = torch.full((dec.rows,), 0, dtype=torch.long, device=dev)
                nxt[: len(PROMPTS)] = logits[-1].argmax(-1)
                logits.append(dec.step(nxt)[: len(PROMPTS)].clone())
            return torch.stack(logits)

        a, b = run(eager), run(graphed)
        assert torch.equal(a, b)
    with torch.no_grad():  # an optimizer step: every LoRA B moves in place
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05 * torch.randn_like(p))
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        a2, b2 = run(eager), run(graphed)
    assert not graphed.stale()
    assert torch.equal(a2, b2) and not torch.equal(a2, a)


def test_the_engine_decodes_through_one_capture_with_the_eager_answers():
    model = lora_model().eval()
    tok = Tok()
    graphed = Engine(model, tok, max_batch=16, autocast=torch.bfloat16)
    eager = Engine(model, tok, max_batch=16, autocast=torch.bfloat16)
    eager.scheduler.capture = False
    assert graphed.scheduler.static and eager.scheduler.static

    def answers(engine, seed):
        q = queue.Queue()
        params = GenParams(max_new_tokens=24, temperature=1.0, seed=seed)
        jobs = [Job(p, params, n=3, events=q, stream=False) for p in PROMPTS]
        engine.submit(*jobs)
        got = {}
        for _ in range(3 * len(PROMPTS)):
            ev = q.get(timeout=120)
            assert ev.finish != "error", ev.text
            got[(PROMPTS.index(ev.job.prompt), ev.index)] = ev.ids
        return got

    for seed in (1, 2):  # two rollouts: the second reuses the capture
        assert answers(graphed, seed) == answers(eager, seed)
    assert graphed.scheduler.stats["captures"] == 1 and graphed.scheduler.stats["static_batches"] == 2
    assert eager.scheduler.stats.get("captures", 0) == 0

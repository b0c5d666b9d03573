"""The one set of generation parameters (``GenParams``) and the per-row token picker.

Every verb and the server describe how an answer is decoded with ``GenParams``. The engine's loop
(``scheduler.py``) gives each row a ``RowSampler``: the row's constraint (structured output), then
transformers' own logits processors (repetition penalty, temperature, top-k, top-p, in the order
``model.generate`` applies them), then greedy argmax or a draw from the row's own seeded generator:
one uniform number a token, turned into a token by the inverse of the row's distribution. Rows that
need no constraint or penalty draw together (``draw_batch``): on a GPU one host sync a step, not one
a row; a row draws the same tokens alone or in any batch.
"""
from __future__ import annotations

from typing import Any, Protocol

from pydantic import Field, PrivateAttr

from ..config import Section


class Constraint(Protocol):
    """A per-row limit on the next token (the server's structured output builds one).

    ``mask`` takes the row's 1-D float logits and returns them with the disallowed tokens at -inf;
    ``advance`` is told every token the row picks (its end-of-turn token too). Optional: ``is_done()``,
    checked after ``advance`` (True ends the row with finish "stop"), and ``fork()``, a fresh copy
    in the start state: an object with ``fork`` serves any number of rows (n > 1, a batch of
    conversations, reuse of the same parameters), each row getting its own fork; an object without
    it serves exactly one row."""

    def mask(self, logits: Any) -> Any: ...

    def advance(self, token_id: int) -> None: ...


class GenParams(Section):
    """How an answer is decoded: the ``gen`` section of chat, predict and synth, and what the server
    builds from a request. A structured-output constraint rides along with ``with_constraint``."""

    max_new_tokens: int = Field(256, gt=0, description="most tokens to generate per answer")
    temperature: float = Field(0.0, ge=0, description="sampling temperature; 0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    top_k: int = Field(0, ge=0, description="sample from the k most likely tokens; 0 = off")
    repetition_penalty: float = Field(1.0, gt=0, description="penalty for repeating tokens; 1 = off")
    seed: int | None = Field(None, description="random seed for sampling (row i of n uses seed + i)")
    stop: list[str] = Field(default_factory=list, description="stop strings: the answer ends before the first one")
    enable_thinking: bool | None = Field(None, description="thinking switch for templates that have one (Qwen3)")
    # Set by code (the server's structured output), never from a config file or the command line.
    _constraint: Any = PrivateAttr(None)

    @property
    def constraint(self) -> Constraint | None:
        return self._constraint

    def with_constraint(self, constraint: Constraint | None) -> "GenParams":
        """A copy of these parameters whose rows are limited by ``constraint`` (see ``Constraint``)."""
        out = self.model_copy()
        out._constraint = constraint
        return out

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def check_constraint(params: GenParams, rows: int) -> None:
    """A constraint without ``fork`` holds one row's state: refuse to share it between rows."""
    c = params.constraint
    if c is not None and rows > 1 and not hasattr(c, "fork"):
        raise ValueError("this constraint has no fork(): it can limit one row, not "
                         f"{rows} (give it a fork() that returns a fresh copy)")


class RowSampler:
    """Picks one row's next tokens; built when the row joins the batch (``index``: its place among n)."""

    def __init__(self, params: GenParams, index: int, device):
        import torch
        from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                  TopKLogitsWarper, TopPLogitsWarper)

        c = params.constraint
        self.constraint = c.fork() if c is not None and hasattr(c, "fork") else c
        self.penalty = LogitsProcessorList()
        if params.repetition_penalty != 1.0:
            self.penalty.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        self.warpers = LogitsProcessorList()
        self.gen = None
        if not params.greedy:
            if params.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k:
                self.warpers.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(params.top_p))
            self.gen = torch.Generator(device=device)
            # rows of equal warpers are warped as one batch (draw_batch): the key, made once per row
            self.warp_key = tuple((type(w).__name__, repr(sorted(vars(w).items()))) for w in self.warpers)
            if params.seed is not None:
                self.gen.manual_seed(params.seed + index)
            else:
                self.gen.seed()

    @property
    def batchable(self) -> bool:
        """Sampled with nothing row-specific but its generator: draws with the others (``draw_batch``)."""
        return self.gen is not None and self.constraint is None and not self.penalty


    @property
    def plain(self) -> bool:
        """Greedy with nothing to apply: the batch's argmax is this row's token."""
        return self.gen is None and self.constraint is None and not self.penalty

    def pick(self, logits, history: list[int]) -> int:
        """The next token from the row's 1-D float logits; ``history`` is the prompt plus the answer so
        far (what the repetition penalty counts, as ``generate`` does)."""
        import torch

        if self.constraint is not None:
            logits = self.constraint.mask(logits)
            if not bool(torch.isfinite(logits).any()):
                raise ValueError("the constraint allows no token here")
        scores = logits[None]
        if self.penalty:
            scores = self.penalty(torch.tensor([history], device=logits.device), scores)
        if self.gen is None:
            return int(scores[0].argmax())
        return int(_inverse_cdf(self.warpers(None, scores), self.uniform()[None])[0])

    def uniform(self):
        """This row's next uniform number in [0, 1), from its own generator (no host sync)."""
        import torch

        return torch.rand((), generator=self.gen, device=self.gen.device)

    def advance(self, token: int) -> bool:
        """Tell the constraint the row took ``token``; True when the constraint says the row is done."""
        if self.constraint is None:
            return False
        self.constraint.advance(token)
        done = getattr(self.constraint, "is_done", None)
        return bool(done()) if done is not None else False


def _inverse_cdf(scores, u):
    """Row i's token: the first whose cumulative probability exceeds u[i] of the row's total (a token
    of zero probability, e.g. cut by top-k, can never be drawn)."""
    import torch

    cdf = scores.float().softmax(-1).cumsum(-1)
    return torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)


def draw_batch(samplers: list[RowSampler], logits):
    """One token for each row (``batchable`` samplers; ``logits`` 2-D, a row each): rows with the same
    warpers (temperature, top-k, top-p) are warped together, each row draws its uniform number from its
    own generator. Returns a 1-D tensor of token ids on the logits' device."""
    import torch

    out = torch.empty(len(samplers), dtype=torch.long, device=logits.device)
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(samplers):
        groups.setdefault(s.warp_key, []).append(i)
    for rows in groups.values():
        idx = torch.tensor(rows, device=logits.device)
        scores = samplers[rows[0]].warpers(None, logits.index_select(0, idx))
        u = torch.stack([samplers[i].uniform() for i in rows])
        out.index_copy_(0, idx, _inverse_cdf(scores, u))
    return out


def token_logprobs(logp_row, chosen: int, top: int) -> dict:
    """The chosen token's log-probability and the ``top`` most likely tokens', from the model's raw
    distribution (before penalty, temperature, top-k/top-p and constraint)."""
    item = {"id": chosen, "logprob": float(logp_row[chosen]), "top": []}
    if top:
        v, ix = logp_row.topk(top)
        item["top"] = list(zip(ix.tolist(), v.tolist()))
    return item

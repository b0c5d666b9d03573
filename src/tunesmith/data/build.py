"""The training data of a recipe: load → check → render → mix, with a report per dataset.

Plain text (``format: text``, for continued pretraining) takes its own path: no chat
template, documents joined with the tokenizer's EOS and packed into ``cutoff_len`` blocks,
loss on every token (as LLaMA-Factory's pt stage does)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, UserError
from ..models.template import ensure_chat_template
from .config import DataConfig
from .load import LoadedDataset, load_dataset
from .mix import mix
from .render import render_many
from .types import PreferencePair, Problem, TextDoc


@dataclass
class SFTData:
    train: list[dict]                 # {"input_ids", "labels"}
    val: list[dict]
    report: list[dict] = field(default_factory=list)   # one per dataset, for the run's manifest


def _bad_rows_error(problems: list[Problem]) -> UserError:
    n = len({(p.file, p.row) for p in problems})
    return UserError(f"{problems[0]} ({n} bad row{'s' * (n != 1)} in total; run `tunesmith data check` for all, "
                     "or set data.drop_bad_rows: true)")


def say_warnings(d: LoadedDataset) -> None:
    """One line per kind of warning: training goes on with these rows."""
    if d.deduped:
        print(f"data: dataset '{d.name}': dropped {d.deduped} exact duplicate row{'s' * (d.deduped != 1)} "
              "(data.dedupe)")
    elif d.duplicates:
        print(f"warning: dataset '{d.name}': {d.duplicates} exact duplicate row{'s' * (d.duplicates != 1)}, "
              "trained on as they are (set data.dedupe: true to drop them)")
    held = [w for w in d.warnings if w.kind == "placeholder"]
    if held:
        rows = ", ".join(f"{w.file}:{w.row}" for w in held[:3]) + (" …" if len(held) > 3 else "")
        print(f"warning: dataset '{d.name}': {len(held)} row{'s' * (len(held) != 1)} keep {{{{name}}}}/{{{{author}}}} "
              f"unfilled ({rows}); fill them with `tunesmith identity --identity_data DIR:{d.name} --name ... "
              "--author ...`")


def load_checked(cfg: DataConfig, what: str = "dataset") -> list[LoadedDataset]:
    """Every dataset of ``cfg`` loaded and row-checked (SFT and preference objectives alike).
    Raises UserError for no datasets, a dataset that can't be found, or bad rows (unless
    ``drop_bad_rows``)."""
    if not cfg.datasets:
        raise UserError(f"data.datasets is empty: list at least one {what}")
    loaded = [load_dataset(ds, cfg.dataset_dir, cfg.dedupe, key=f"data.datasets[{i}]")
              for i, ds in enumerate(cfg.datasets)]
    problems = [p for d in loaded for p in d.problems]
    if problems and not cfg.drop_bad_rows:
        raise _bad_rows_error(problems)
    return loaded


def build_sft_data(cfg: DataConfig, tokenizer) -> SFTData:
    """Rendered, mixed and split training rows.

    Raises UserError for: no datasets; a dataset that can't be found; bad rows (unless
    ``drop_bad_rows``); preference data; text mixed with chat data; a template the
    tokenizer lacks (set ``template``); and no row left after rendering."""
    loaded = load_checked(cfg)
    for d in loaded:
        if any(isinstance(r, PreferencePair) for r in d.rows):
            raise UserError(f"dataset '{d.name}' holds preference pairs (chosen/rejected): it is DPO data, "
                            "not supervised fine-tuning data")
        say_warnings(d)
    text = [d.name for d in loaded if d.rows and isinstance(d.rows[0], TextDoc)]
    if text and len(text) < len([d for d in loaded if d.rows]):
        chat = next(d.name for d in loaded if d.rows and not isinstance(d.rows[0], TextDoc))
        raise ConfigError(f"data.datasets: '{text[0]}' is plain text (pretraining) and '{chat}' is chat data: "
                          "train them in separate stages")
    if text:
        return _build_text(cfg, tokenizer, loaded)
    ensure_chat_template(tokenizer, cfg.template, "the model's tokenizer")

    rendered, dropped, template_bad = [], [], []
    for d in loaded:
        rows, errors = render_many(d.rows, tokenizer, cfg.cutoff_len, cfg.mask_history, cfg.num_workers)
        if errors and not cfg.drop_bad_rows:
            i, msg = min(errors.items())
            raise UserError(f"{d.rows[i].source}: template: {msg} (the chat template refuses {len(errors)} "
                            "rows; set data.drop_bad_rows: true to skip them)")
        kept = [r for r in rows if r is not None]
        rendered.append(kept)
        template_bad.append(len(errors))
        dropped.append(len(rows) - len(kept) - len(errors))
    if not any(rendered):
        raise UserError(f"no row has a trainable token within data.cutoff_len={cfg.cutoff_len} "
                        f"({sum(dropped)} rows dropped); raise cutoff_len or check the answers")

    train_idx, val_idx = mix([len(r) for r in rendered], [d.config.samples for d in loaded],
                             [d.config.ratio for d in loaded], cfg.val_size, cfg.seed)
    train = [rendered[s][i] for s, i in train_idx]
    val = [rendered[s][i] for s, i in val_idx]
    used = Counter(s for s, _ in train_idx + val_idx)
    report = [dataset_report(d, used[k], template_bad[k]) | {"dropped_too_long": dropped[k]} for k, d in enumerate(loaded)]
    return SFTData(train, val, report)


def dataset_report(d: LoadedDataset, used: int, more_bad: int = 0) -> dict:
    return {"name": d.name, "path": str(Path(d.config.path).resolve()), "sha256": d.sha256, "rows": d.total,
            "bad_rows": d.bad_rows + more_bad, "rows_used": used, "duplicates": d.duplicates,
            "duplicates_dropped": d.deduped}


def _build_text(cfg: DataConfig, tok, loaded: list[LoadedDataset]) -> SFTData:
    """Documents → EOS-joined token stream → ``cutoff_len`` blocks; labels = input_ids.

    The split and the mix pick documents (so no document is in both splits); each split is
    then packed on its own. Unlike LLaMA-Factory the last, shorter block is kept, so a
    small corpus still trains."""
    if tok.eos_token_id is None:
        raise UserError("the model's tokenizer has no EOS token to end each document of the text data")
    bos = [tok.bos_token_id] if getattr(tok, "add_bos_token", False) and tok.bos_token_id is not None else []
    docs = [[r.text for r in d.rows] for d in loaded]
    train_idx, val_idx = mix([len(x) for x in docs], [d.config.samples for d in loaded],
                             [d.config.ratio for d in loaded], cfg.val_size, cfg.seed)

    def pack(idx: list[tuple[int, int]]) -> list[dict]:
        if not idx:
            return []
        ids = tok([docs[s][i] for s, i in idx], add_special_tokens=False)["input_ids"]
        stream = [t for doc in ids for t in bos + doc + [tok.eos_token_id]]
        blocks = [stream[k:k + cfg.cutoff_len] for k in range(0, len(stream), cfg.cutoff_len)]
        return [{"input_ids": b, "labels": list(b)} for b in blocks if len(b) > 1]  # one token predicts nothing

    used = Counter(s for s, _ in train_idx + val_idx)
    return SFTData(pack(train_idx), pack(val_idx), [dataset_report(d, used[k]) for k, d in enumerate(loaded)])

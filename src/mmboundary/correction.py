"""Confidence-guided self-correction: resample the steps a model is unsure of.

The paper promises that a model which knows its confidence can correct itself, but gives no
procedure. This module is **this project's design**:

1. Generate the chain greedily (exactly the chain `evaluate` judges) and compute each step's
   confidence: the INTERNAL level of the step on the model that wrote it (the run's normaliser,
   fusion and levels, `confidence.scorer.ScoringContext` + `confidence.scorer.internal_levels`, as the PPO
   stage computes it), or the EXPRESSED level its statement maps back to (`signal`).
2. Walk the steps in order. At the first step whose confidence is at or below `threshold`, sample
   `samples` candidates for that step from the same prefix (the exact token ids of the steps
   before it; tempered sampling at `temperature`, each candidate stopped at the end of its first
   sentence), then score every candidate by internal confidence and keep the most confident one.
3. If the kept candidate is not the original step, regenerate the rest of the chain greedily from
   the prefix + the kept step (the old continuation was conditioned on the old step), and
   recompute the levels of the new chain.
4. Continue with the next step after the one just examined, until no step is low or the
   question's `budget` of extra sampled steps is spent.

Because the model is causal and greedy decoding is deterministic, "generate step by step and
resample a low step" and "generate greedily, then go back to the first low step" give the same
chain; the second needs one generation call per replaced step instead of one per step.

Design choices (**[choice]**, see `CorrectionConfig` for the defaults):

- Candidates are ranked by INTERNAL confidence whatever triggers the resampling (the issue's
  rule: keep the candidate the model is most confident in): by the step's FUSED internal
  confidence in [0, 1], not its level, since five levels tie too often to choose among a handful
  of candidates (on the default run's SFT model, most candidates of a low step share its level).
  A step that states the final answer is fused from its OWN signals: with the run's default
  fusion (`answer_step: premises`) its confidence is the mean of the steps before it, identical
  for every candidate, so it could not tell them apart.
- A tie keeps the earlier candidate, and the original step is the first candidate
  (`keep_original`): a step is replaced only by a candidate the model is strictly more confident
  in. A candidate without a confidence (no sentence, or a signal that could not be computed)
  ranks below every other.
- Each step is examined at most once; a replaced step is not resampled again.
- The budget counts sampled candidate steps per question; when fewer than `samples` remain, only
  the rest is sampled. Budget 0 gives exactly the plain greedy chain.
- Sampling randomness is seeded per (seed, example id, step index, correction number), so a
  rerun gives the same result.

Extra compute is reported per question (`ExtraCompute`): sampled candidate steps and the tokens
sampled for them, tokens regenerated greedily after replaced steps, and candidate chains scored
(each one teacher-forced pass plus its signals).

Entry points: `SelfCorrector` (a backend that generates, a scorer that gives internal levels, the
statement mapper, the config) and its `run(examples) -> CorrectionRun`, whose `chains` are the
`GeneratedChain`s `evaluate` scores. `mmboundary.api.LoadedModel.correct_examples` builds one
from a run; `mmboundary ask --self-correct` runs it on one question. The settings and the records
(`CorrectionConfig`, `CorrectionRun`, ...) live in `mmboundary.correction_records` and are
re-exported here.
"""

from __future__ import annotations

import dataclasses
import warnings
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from transformers import StoppingCriteriaList

from mmboundary.confidence.estimator import estimate_signals
from mmboundary.confidence.fusion import FusionConfig, fuse_steps
from mmboundary.confidence.scorer import internal_levels, response_inputs, token_char_ends
from mmboundary.correction_records import (
    Candidate,
    Correction,
    CorrectionConfig,
    CorrectionResult,
    CorrectionRun,
    ExtraCompute,
    correction_config,
)
from mmboundary.data.images import load_image
from mmboundary.errors import ConfigError, RunError
from mmboundary.generation import chain_record, expressed_chain_record
from mmboundary.progress import make_progress
from mmboundary.records import Example, GeneratedChain
from mmboundary.statements.chain_format import parse_chains
from mmboundary.steps import split_steps

__all__ = [
    "Backend",
    "Candidate",
    "Correction",
    "CorrectionConfig",
    "CorrectionResult",
    "CorrectionRun",
    "ExtraCompute",
    "InternalScorer",
    "SelfCorrector",
    "VLMBackend",
    "correction_config",
]


# --- generation and scoring ---------------------------------------------------------------------

class Backend(Protocol):
    """What generates: greedy chains for a batch, greedy continuations and sampled steps of one
    question from an exact prefix of response token ids. Returned ids end at (and include) the
    eos when one was generated."""

    @property
    def tokenizer(self) -> Any: ...

    @property
    def eos_token_id(self) -> int: ...

    def greedy_batch(self, examples: Sequence[Example], max_new_tokens: int) -> list[list[int]]: ...

    def greedy(self, example: Example, prefix: list[int], max_new_tokens: int) -> list[int]: ...

    def sample(self, example: Example, prefix: list[int], n: int, *, temperature: float,
               max_new_tokens: int, seed: int) -> list[list[int]]: ...


class Scorer(Protocol):
    """Internal confidence of the steps of chains on the model that wrote them."""

    def levels(self, examples: Mapping[str, Example],
               chains: Sequence[GeneratedChain]) -> list[list[int] | None]:
        """The internal level of every step of each chain (None: a chain whose signals could not
        all be computed)."""

    def candidates(self, examples: Mapping[str, Example],
                   chains: Sequence[GeneratedChain]) -> list[tuple[int, float] | None]:
        """(level, fused confidence) of the LAST step of each chain, an answer step by its own
        signals (None: not computable)."""


def _cut_at_eos(ids: Sequence[int], eos: int) -> list[int]:
    ids = [int(i) for i in ids]
    return ids[: ids.index(eos) + 1] if eos in ids else ids


class _StepEnd:
    """Stopping criterion of candidate sampling: a row is done once the text after the prefix
    holds a whole sentence and the start of the next one (or once it generated the eos)."""

    def __init__(self, tokenizer, prefix: list[int], input_length: int, eos: int):
        self.tokenizer, self.prefix, self.start, self.eos = tokenizer, list(prefix), input_length, eos
        self.prefix_chars = token_char_ends(tokenizer, prefix)[1][-1] if prefix else 0

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        done = []
        for row in input_ids[:, self.start:].tolist():
            if self.eos in row:
                done.append(True)
                continue
            text = self.tokenizer.decode(self.prefix + row, skip_special_tokens=True,
                                         clean_up_tokenization_spaces=False)
            done.append(sum(1 for _, e in split_steps(text) if e > self.prefix_chars) >= 2)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class VLMBackend:
    """`Backend` of a `models.vlm.VLM`: the first greedy chains exactly as `generation.generate_texts`
    produces them (same batches, `VLM.generate_ids`), continuations and candidate steps from
    prompt + exact prefix ids (`confidence.scorer.response_inputs`, then the model's `generate`)."""

    def __init__(self, vlm, batch_size: int = 64):
        self.vlm = vlm
        self.batch_size = batch_size
        self._image: tuple[str, Any] | None = None  # the current example's decoded image

    @property
    def tokenizer(self):
        return self.vlm.tokenizer

    @property
    def eos_token_id(self) -> int:
        return self.vlm.eos_token_id

    def image(self, example: Example):
        if self._image is None or self._image[0] != str(example.image):
            self._image = (str(example.image), load_image(example.image))
        return self._image[1]

    def greedy_batch(self, examples: Sequence[Example], max_new_tokens: int) -> list[list[int]]:
        out: list[list[int]] = []
        for i in range(0, len(examples), self.batch_size):
            batch = examples[i:i + self.batch_size]
            out += self.vlm.generate_ids([ex.question for ex in batch], [ex.choices for ex in batch],
                                         [load_image(ex.image) for ex in batch], max_new_tokens=max_new_tokens,
                                         do_sample=False)
        return out

    def _inputs(self, example: Example, prefix: list[int], n: int) -> tuple[dict, int]:
        """Model inputs of n copies of prompt + `prefix` (equal lengths: no padding) and their width."""
        prompt = self.vlm.prompt_text(example.question, example.choices)
        inputs, _ = response_inputs(self.vlm, [prompt] * n, [self.image(example)] * n, [prefix] * n)
        return inputs, int(inputs["input_ids"].shape[1])

    def _common(self) -> dict:
        """What every `generate` call of the project passes (`VLM.generate_ids`): pad and eos ids,
        and the ids a response must never contain (image placeholder, bos, pad)."""
        vlm = self.vlm
        return dict(pad_token_id=vlm.pad_token_id, eos_token_id=vlm.eos_token_id,
                    suppress_tokens=vlm.never_generated_ids() or None)

    def _rows(self, out: torch.Tensor, width: int) -> list[list[int]]:
        """The new ids of each row: through the eos; a row stopped early loses the padding after it
        (pad is never generated, see `_common`)."""
        eos, pad = self.vlm.eos_token_id, self.vlm.pad_token_id
        rows = []
        for row in out[:, width:].tolist():
            row = _cut_at_eos(row, eos)
            if row and row[-1] != eos:
                while row and row[-1] == pad:
                    row.pop()
            rows.append(row)
        return rows

    @torch.no_grad()
    def greedy(self, example: Example, prefix: list[int], max_new_tokens: int) -> list[int]:
        vlm = self.vlm
        inputs, width = self._inputs(example, prefix, 1)
        out = vlm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **self._common())
        return self._rows(out, width)[0]

    @torch.no_grad()
    def sample(self, example: Example, prefix: list[int], n: int, *, temperature: float,
               max_new_tokens: int, seed: int) -> list[list[int]]:
        vlm = self.vlm
        inputs, width = self._inputs(example, prefix, n)
        stop = _StepEnd(vlm.tokenizer, prefix, width, vlm.eos_token_id)
        device = vlm.device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            out = vlm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True,
                                     temperature=temperature, top_k=0, top_p=1.0,
                                     stopping_criteria=StoppingCriteriaList([stop]), **self._common())
        return self._rows(out, width)


class InternalScorer:
    """Internal confidence on `vlm` with a run's `confidence.scorer.ScoringContext` (its normaliser,
    fusion, levels, CLIP and sentence similarity).

    `levels`: exactly what the PPO stage computes (`confidence.scorer.internal_levels`).
    `candidates`: the last step's fused confidence and level for ranking candidates: the same
    signals (`confidence.estimator.estimate_signals`) fused with the run's fusion config except
    that an answer step is fused from its own signals (`answer_step='own'`), and the level of that
    value (`Levels.level`, as `fusion.score_steps` assigns it)."""

    def __init__(self, vlm, context):
        self.vlm = vlm
        self.context = context

    def levels(self, examples: Mapping[str, Example], chains: Sequence[GeneratedChain]) -> list[list[int] | None]:
        return internal_levels(self.vlm, self.context, examples, chains)

    def candidates(self, examples: Mapping[str, Example],
                   chains: Sequence[GeneratedChain]) -> list[tuple[int, float] | None]:
        ctx = self.context
        fusion = (ctx.fusion or FusionConfig()).model_copy(update={"answer_step": "own"})
        if ctx.clip is not None:
            ctx.clip.model.to(self.vlm.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a step beyond max_length: None below
            signals = estimate_signals(self.vlm, ctx.clip, ctx.similarity, examples, chains,
                                       batch_size=ctx.estimate_batch_size, signals=ctx.signals, progress=False)
        out: list[tuple[int, float] | None] = []
        k = 0
        for chain in chains:
            n = len(chain.steps)
            k += n
            if not n:
                out.append(None)
                continue
            try:  # the last step is fused from its own signals: no other step is needed
                fused = fuse_steps([signals[k - 1]], ctx.normalizer, fusion)[0]
            except ValueError:
                out.append(None)
                continue
            out.append((ctx.levels.level(fused), fused))
        return out


# --- the procedure ------------------------------------------------------------------------------

@dataclasses.dataclass
class _State:
    """A chain being corrected: its exact response ids, the decoded text (unstripped), each
    token's character end, its sentence spans, and the typed chain (on the stripped text)."""

    ids: list[int]
    raw: str
    ends: list[int]
    spans: list[tuple[int, int]]
    chain: GeneratedChain
    internal: tuple[int | None, ...] = ()

    def token_range(self, t: int) -> tuple[int, int]:
        """Tokens [a, b) of sentence t: a = tokens wholly before it, b = through the token that
        produced its last character."""
        s, e = self.spans[t]
        return bisect_right(self.ends, s), bisect_left(self.ends, e) + 1


def _rank(candidate: Candidate) -> float:
    """Candidates rank by fused internal confidence; one without it below every other."""
    c = candidate.internal_confidence
    return -1.0 if c is None else float(c)


def _derive_seed(seed: int, example_id: str, step: int, k: int) -> int:
    return zlib.crc32(f"{seed}:{example_id}:{step}:{k}".encode()) & 0x7FFFFFFF


@dataclasses.dataclass
class SelfCorrector:
    """Self-correction of chains (module docstring).

    - `backend`: what generates (`VLMBackend(vlm)`, or any `Backend`);
    - `scorer`: internal levels (`InternalScorer(vlm, ScoringContext)`); None when the model has
      no internal confidence context, then only budget 0 is possible;
    - `mapper`: the statement mapper for a model that writes statements (None: it writes none);
    - `max_new_tokens`: longest response, as `generation.max_new_tokens`; `batch_size` of the
      first greedy pass is the backend's."""

    backend: Backend
    scorer: Scorer | None
    mapper: Any
    config: CorrectionConfig = dataclasses.field(default_factory=CorrectionConfig)
    max_new_tokens: int = 128

    def __post_init__(self):
        if self.config.budget > 0:
            if self.scorer is None:
                raise RunError("self-correction ranks candidates by internal confidence, which needs the "
                               "normaliser and levels of a run whose estimate stage is complete")
            if self.config.signal == "expressed" and self.mapper is None:
                raise ConfigError("self-correction signal 'expressed' needs a model that writes confidence "
                                  "statements (an sft or rl model)")

    # -- chains --------------------------------------------------------------------------------

    def _states(self, examples: Sequence[Example], ids_list: Sequence[list[int]]) -> list[_State]:
        decoded = [token_char_ends(self.backend.tokenizer, ids) for ids in ids_list]
        texts = [raw.strip() for raw, _ in decoded]
        if self.mapper is not None:
            parsed = parse_chains(texts, self.mapper)
            chains = [expressed_chain_record(ex, t, p) for ex, t, p in zip(examples, texts, parsed)]
        else:
            chains = [chain_record(ex, t) for ex, t in zip(examples, texts)]
        out = []
        for ids, (raw, ends), chain in zip(ids_list, decoded, chains):
            spans = split_steps(raw)
            if len(spans) != len(chain.steps):  # the same splitter on the same sentences: never expected
                raise RuntimeError(f"self-correction: {len(spans)} sentences in the decoded ids but "
                                   f"{len(chain.steps)} steps in the chain of {chain.example_id!r}")
            out.append(_State(list(ids), raw, ends, spans, chain))
        return out

    def _internal(self, examples: Sequence[Example], chains: Sequence[GeneratedChain]) -> list[tuple[int | None, ...]]:
        if self.scorer is None:
            return [(None,) * len(c.steps) for c in chains]
        levels = self.scorer.levels({ex.id: ex for ex in examples}, chains)
        return [tuple(lv) if lv is not None else (None,) * len(c.steps) for c, lv in zip(chains, levels)]

    def _deciding(self, state: _State) -> tuple[int | None, ...]:
        if self.config.signal == "expressed":
            return tuple(s.level for s in state.chain.steps)
        return state.internal

    def _first_low(self, state: _State, start: int) -> int | None:
        cfg = self.config
        for t, level in enumerate(self._deciding(state)):
            if t < start:
                continue
            if (level is None and cfg.unknown_is_low) or (level is not None and level <= cfg.threshold):
                return t
        return None

    def _cut(self, prefix: list[int], sample: list[int]) -> tuple[list[int], str, bool]:
        """The first sentence of a sampled continuation: its token ids (through the token of its
        last character; through the eos when nothing but the eos follows it), its text, and
        whether it ended (the next sentence started, or the eos came)."""
        eos = self.backend.eos_token_id
        full = prefix + sample
        raw, ends = token_char_ends(self.backend.tokenizer, full)
        p_chars = ends[len(prefix) - 1] if prefix else 0
        after = [sp for sp in split_steps(raw) if sp[1] > p_chars]
        has_eos = eos in sample
        if not after:
            return (sample[: sample.index(eos) + 1] if has_eos else sample), "", has_eos
        s, e = after[0]
        text = raw[max(s, p_chars):e].strip()
        if has_eos and len(after) == 1:
            return sample[: sample.index(eos) + 1], text, True
        j = bisect_left(ends, e) + 1 - len(prefix)
        return sample[:max(j, 0)], text, len(after) >= 2 or has_eos

    def _correct(self, example: Example, state: _State, greedy_tokens: int) -> CorrectionResult:
        cfg = self.config
        budget = cfg.budget
        start = 0
        corrections: list[Correction] = []
        sampled_steps = sampled_tokens = regenerated = scored = 0
        while budget > 0:
            t = self._first_low(state, start)
            if t is None:
                break
            start = t + 1
            a, b = state.token_range(t)
            room = self.max_new_tokens - a
            if room <= 0:
                continue
            n = min(cfg.samples, budget)
            budget -= n
            prefix = state.ids[:a]
            samples = self.backend.sample(example, prefix, n, temperature=cfg.temperature,
                                          max_new_tokens=min(cfg.step_max_new_tokens, room),
                                          seed=_derive_seed(cfg.seed, example.id, t, len(corrections)))
            sampled_steps += n
            sampled_tokens += sum(len(s) for s in samples)
            options: list[tuple[list[int], str, bool, int, bool]] = []  # ids, text, complete, tokens, original
            if cfg.keep_original:
                s, e = state.spans[t]
                options.append((state.ids[a:b], state.raw[s:e], True, b - a, True))
            for s in samples:
                cut, text, complete = self._cut(prefix, list(s))
                options.append((cut, text, complete, len(s), False))
            cand_states = self._states([example] * len(options), [prefix + o[0] for o in options])
            scores = self.scorer.candidates({example.id: example}, [c.chain for c in cand_states])
            scored += len(options)
            candidates = []
            for (cut, text, complete, tokens, original), cs, sc in zip(options, cand_states, scores):
                if not (text or original) or not cs.chain.steps:
                    sc = None  # no sentence of its own: the last step of its chain is the prefix's
                expressed = cs.chain.steps[-1].level if sc is not None and self.mapper is not None else None
                candidates.append(Candidate(text=text, internal_level=sc[0] if sc else None,
                                            internal_confidence=sc[1] if sc else None, expressed_level=expressed,
                                            tokens=tokens, original=original, complete=complete))
            kept = max(range(len(candidates)), key=lambda i: (_rank(candidates[i]), -i))
            corrections.append(Correction(step_index=t, level=self._deciding(state)[t],
                                          candidates=tuple(candidates), kept=kept))
            if candidates[kept].original:
                continue
            ids = prefix + options[kept][0]
            eos = self.backend.eos_token_id
            if (not ids or ids[-1] != eos) and len(ids) < self.max_new_tokens:
                cont = self.backend.greedy(example, ids, self.max_new_tokens - len(ids))
                regenerated += len(cont)
                ids = ids + list(cont)
            state = self._states([example], [ids])[0]
            state.internal = self._internal([example], [state.chain])[0]
            scored += 1
        expressed = tuple(s.level for s in state.chain.steps) if self.mapper is not None \
            else (None,) * len(state.chain.steps)
        return CorrectionResult(
            example_id=example.id, chain=state.chain, internal_levels=state.internal, expressed_levels=expressed,
            corrections=tuple(corrections),
            compute=ExtraCompute(sampled_steps=sampled_steps, sampled_tokens=sampled_tokens,
                                 regenerated_tokens=regenerated, scored_chains=scored, greedy_tokens=greedy_tokens))

    # -- entry point ---------------------------------------------------------------------------

    def run(self, examples: Sequence[Example], description: str = "self-correction") -> CorrectionRun:
        """Greedy chains of `examples` (one batched pass), their levels (one scoring pass), then
        the correction of each question in turn. Budget 0 returns the plain greedy chains."""
        examples = list(examples)
        ids_list = self.backend.greedy_batch(examples, self.max_new_tokens)
        states = self._states(examples, ids_list)
        for st, lv in zip(states, self._internal(examples, [s.chain for s in states])):
            st.internal = lv
        results = []
        with make_progress() as bar:
            task = bar.add_task(description, total=len(examples), info="")
            for ex, st, ids in zip(examples, states, ids_list):
                results.append(self._correct(ex, st, len(ids)))
                bar.advance(task)
        return CorrectionRun(config=self.config, results=tuple(results))

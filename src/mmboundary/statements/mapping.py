"""Level <-> confidence statement (method.md section 3).

Two mappers with one interface (`LevelMapper`), chosen by config through `make_mapper`:

`StatementMapper` (kind "statement", the paper):
- forward, level -> statement: a statement drawn uniformly from the pool of that level with a
  caller-given `numpy.random.Generator` (or an int seed), so SFT data are reproducible. Only the
  pool (`pool.yaml`) is ever written; the backward mapping's extra references are never drawn.
- backward, statement -> level (issue 23: measured on a held-out set it was never tuned on,
  docs/results/statement-mapping.md), in these steps:
  1. **[choice]** exact match first: a text equal to a reference statement (`normalise`: case,
     spacing and final punctuation ignored; then also in its canonical form, step 3) gets that
     statement's level, so every pool statement maps back to its own level whatever the read-out
     does (the read-out alone also fits the whole pool);
  2. **[choice]** (`read_numbers=True`) a stated number is read as the number it is
     (`statements/numbers.py`): a probability goes to the level whose interval holds it,
     `confidence.fusion.probability_level` ([0, 0.2) -> 1 .. [0.8, 1] -> 5; "60%" = 0.6 -> 4),
     "k/5" and "k out of 5" to level k, only when the text speaks of confidence ("so 50% of the
     shapes are red" is not read);
  3. **[choice]** (`rewrite=True`) what the encoder reads (`statements/phrasing.py`): the canonical
     form (lower case, contractions written out, American spelling), double negations as the degree
     they state ("not unsure" -> "fairly sure", "not without doubts" -> "with some doubts"), and a
     statement negated as a whole ("it is not the case that X", "I can't say X") read as X with its
     level then negated (`phrasing.NEGATED`: 5, 4, 3 -> 2; 2 -> 4; 1 -> 3); a text of function
     words only ("and I", "with", "and so on": a cut-off clause) is unparsed;
  4. the text is embedded with the offline MiniLM encoder (`SentenceSimilarity`, L2-normalised) and
     compared with the references: **[choice]** the pool (`pool.yaml`, 36 per level) and the extra
     references of the backward mapping (`data/backward_pool.yaml`, 78-93 per level: more
     wordings, no connective or a mismatched one, third person, idioms, negated degrees; written by
     hand), each (`strip_connectives=True`) also without its leading connective ("and", "but",
     "though", "although", "yet", "so", "while"), all in canonical form; a form shared by two levels
     is dropped. Without the stripped forms a statement without a connective is judged by the
     missing connective;
  5. **[choice]** statement or not: a text is read only if the statement detector gives it
     probability >= `min_statement_probability` (0.7) AND its best cosine to the references is >=
     `min_similarity` (0.4, a floor). The detector is a logistic regression on the embedding
     (fitted like the read-out below) of the references (class 1) against the hand-written tails
     of ordinary sentences of `data/dev_tails.yaml` "train" (class 0; both classes weigh the same).
     Chosen on data none of it is fitted on: the development statements (`data/dev_statements.yaml`,
     139), the 61 tuning paraphrases, and 92 tails (the "dev" tails and the tuning tails of
     tests/test_statements.py). At 0.5 / 0.6 / 0.7 / 0.9 it reads 3 / 3 / 1 / 1 of the 92 tails as
     statements; at 0.7 it loses 1 of the 200 statements (p 0.64), at 0.8 two. The floor changes
     nothing there (every statement's best cosine is >= 0.51); it keeps texts far from every
     reference unparsed whatever the detector says. A cosine threshold alone cannot separate the
     two with the larger reference set: at 0.55 it read 11% of those tails, at 0.65 still 3% while
     losing 5% of the statements (a hedged tail, "so it is likely evening", is as close to the
     references as a hedge). A tail wrongly read as a statement would reward a policy for writing
     anything after a comma;
  6. **[choice]** `method="logistic"`: the level is the argmax of a multinomial logistic
     regression fitted on the reference embeddings (features: the 384-d embedding and a bias; L2
     penalty `l2=3e-5` on the weights; full-batch Nesterov gradient descent from zero,
     `fit_steps=3000` at `learning_rate=2.0`, `momentum=0.9`: deterministic, numpy only, about 2 s
     for the 1,160 references; **[choice]** a pool statement weighs `pool_weight=2`, an extra
     reference 1, so that the read-out alone reads back every pool statement, which plain
     weights missed for 1 of 180). Why: plain nearest neighbour ranks
     statements by topic ("confidence", "doubt", "sure") rather than by degree, so "with low
     confidence" lands next to "with high confidence"; a linear read-out fitted on references in
     which every level uses the same phrasing families weighs the modifier instead.
     `method="nearest"` is the paper's plain nearest neighbour, `method="knn"` a vote of the `k`
     nearest references weighted by exp(cosine / `temperature`). Tried and not kept: overriding
     the read-out by the nearest reference when its cosine is >= 0.8 .. 0.95 (with or without a
     margin over the nearest reference of another level) lost 2-13 points on the development
     statements; l2 1e-3 lost 8 points and 3e-4 fitted 10 pool statements wrongly; plain gradient
     descent (the earlier fit) stopped short of the optimum (94% of the references fitted).
  Results (unparsed counted as wrong): docs/results/statement-mapping.md.
- The reference and tail embeddings are computed once per mapper (one encoder call, on first
  backward use) and kept in memory; with `cache_dir` they are also saved as `.npy`, keyed by a hash
  of the encoder path and the texts, and reused by later mappers. The read-out and the detector are
  fitted once, after them (and once per process for identical embeddings and settings).
- `levels_of(texts)` maps a whole batch with ONE encoder call (texts matched exactly, empty or
  with a stated number are not embedded at all). The encoder is loaded lazily, so forward mapping
  (building SFT data) never loads it; pass `encoder=` to share an already loaded one.

`NumericMapper` (kind "numeric", the "w/o S-S mapping" ablation): the statement is the level as a
number, `"confidence 4/5"` (`template`), written and parsed exactly by a regular expression
(case-insensitive, optional spaces around the slash); anything else, or a level outside 1..5,
is unparsed. No encoder is involved.
"""

from __future__ import annotations

import hashlib
import numbers
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from mmboundary.confidence.similarity import SentenceSimilarity
from mmboundary.statements.numbers import stated_level
from mmboundary.statements.phrasing import NEGATED, canonical, encoder_input, has_content
from mmboundary.statements.pool import LEVELS, backward_pool, default_pool, normalise, sentence_tails, validate_pool
from mmboundary.steps import require_text

Method = Literal["logistic", "nearest", "knn"]
MapperKind = Literal["statement", "numeric"]
Rng = np.random.Generator | int | None

#: Defaults of the backward mapping (see the module docstring).
DEFAULT_MIN_SIMILARITY = 0.4
DEFAULT_MIN_STATEMENT_PROBABILITY = 0.7
DEFAULT_METHOD: Method = "logistic"

#: Leading connectives removed for the stripped reference forms (see the module docstring).
CONNECTIVES = ("and", "but", "though", "although", "yet", "so", "while")
_CONNECTIVE = re.compile(r"^(?:%s)\s+" % "|".join(CONNECTIVES), re.IGNORECASE)


def strip_connective(statement: str) -> str:
    """The statement without its leading connective ("but I am not sure" -> "I am not sure")."""
    return _CONNECTIVE.sub("", statement.strip(), count=1)


def reference_statements(pool: dict[int, Sequence[str]], strip_connectives: bool = True
                         ) -> tuple[list[str], list[int]]:
    """The texts the backward mapping compares with, and their levels: the pool, then (with
    `strip_connectives`) each statement without its connective where that is a new text of one
    level only."""
    texts = [s for lv in pool for s in pool[lv]]
    labels = [lv for lv in pool for _ in pool[lv]]
    if not strip_connectives:
        return texts, labels
    known = {normalise(t) for t in texts}
    stripped: dict[str, tuple[str, set[int]]] = {}
    for t, lv in zip(texts, labels):
        form = strip_connective(t)
        key = normalise(form)
        if key and key not in known:
            stripped.setdefault(key, (form, set()))[1].add(lv)
    for form, levels in stripped.values():
        if len(levels) == 1:  # a form shared by two levels says nothing about either
            texts.append(form)
            labels.append(next(iter(levels)))
    return texts, labels


def backward_references(pool: dict[int, Sequence[str]], extra: dict[int, Sequence[str]] | None = None,
                        strip_connectives: bool = True) -> tuple[list[str], list[int]]:
    """The references of the backward mapping and their levels: `reference_statements` of the pool
    with the `extra` statements added to their levels, then deduplicated by `canonical` form (a
    form of two levels is dropped; of one level, kept once)."""
    merged = {lv: list(pool[lv]) + list((extra or {}).get(lv, ())) for lv in pool}
    texts, labels = reference_statements(merged, strip_connectives)
    levels_of_form: dict[str, set[int]] = {}
    for t, lv in zip(texts, labels):
        levels_of_form.setdefault(canonical(t), set()).add(lv)
    out_t, out_l, seen = [], [], set()
    for t, lv in zip(texts, labels):
        form = canonical(t)
        if len(levels_of_form[form]) == 1 and form not in seen:
            seen.add(form)
            out_t.append(t)
            out_l.append(lv)
    return out_t, out_l


def as_generator(rng: Rng) -> np.random.Generator:
    """A `numpy.random.Generator` from a generator (returned as is), an int seed, or None (seed 0)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else int(rng))


def _check_level(level: int) -> int:
    """`level` as an int: a TypeError naming it when it is no number, a ValueError when it is
    not one of `LEVELS` (a bool, a fraction, out of range)."""
    if not isinstance(level, numbers.Real):
        raise TypeError(f"statement: level must be an int, not {type(level).__name__}")
    if isinstance(level, bool) or level != level or int(level) != level or int(level) not in LEVELS:
        raise ValueError(f"confidence level must be one of {LEVELS}, got {level!r}")
    return int(level)


def _check_texts(texts: Sequence[str], where: str) -> None:
    """TypeError naming the argument unless `texts` is a sequence of `str` (a lone str is not)."""
    if isinstance(texts, str):
        raise TypeError(f"{where}: texts must be a sequence of str, not a str")
    for i, text in enumerate(texts):
        require_text(text, f"texts[{i}]", where)


@runtime_checkable
class LevelMapper(Protocol):
    """What callers need: level -> statement (seeded) and statement -> level (batched)."""

    def statement(self, level: int, rng: Rng = None) -> str: ...

    def statements(self, levels: Sequence[int], rng: Rng = None) -> list[str]: ...

    def level_of(self, text: str) -> int | None: ...

    def levels_of(self, texts: Sequence[str]) -> list[int | None]: ...


def fit_softmax(x: np.ndarray, labels: np.ndarray, n_classes: int, *, l2: float = 1e-4,
                steps: int = 3000, learning_rate: float = 2.0, weights: np.ndarray | None = None,
                momentum: float = 0.0) -> np.ndarray:
    """Multinomial logistic regression by full-batch gradient descent from zero (deterministic).

    `x` (N, D), `labels` (N,) in 0..n_classes-1, `weights` (N,) per example (None: all 1). Returns W
    of shape (D + 1, n_classes), the last row the bias (not penalised). Loss: weighted mean
    cross-entropy + l2/2 * |W without bias|^2. `momentum` > 0: Nesterov's accelerated gradient
    (0.9 reaches in 1,000 steps a training fit that plain descent does not reach in 8,000).
    """
    x = np.asarray(x, dtype=np.float64)
    xb = np.hstack([x, np.ones((len(x), 1))])
    w_ex = np.ones(len(xb)) if weights is None else np.asarray(weights, dtype=np.float64)
    xt = np.ascontiguousarray(xb.T) * (w_ex / w_ex.sum())
    onehot = np.eye(n_classes)[np.asarray(labels)]
    w = np.zeros((xb.shape[1], n_classes))
    velocity = np.zeros_like(w)
    for _ in range(steps):
        ahead = w + momentum * velocity if momentum else w
        p = softmax(xb @ ahead)
        grad = xt @ (p - onehot)
        grad[:-1] += l2 * ahead[:-1]
        if momentum:
            velocity = momentum * velocity - learning_rate * grad
            w = w + velocity
        else:
            w = w - learning_rate * grad
    return w


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


#: Fitted classifiers by a hash of their training embeddings, labels and settings: mappers built
#: on the same pool in one process fit once (the fit is deterministic, so this changes nothing).
_FITTED: dict[str, np.ndarray] = {}


class StatementMapper:
    """The paper's mapping between levels and natural-language statements (module docstring).

    - `pool`: level -> statements (default: the packaged pool);
    - `extra_references`: level -> more reference statements of the backward mapping (None: the
      packaged `data/backward_pool.yaml` with the default pool, none with a pool of your own);
    - `min_similarity`: best cosine to the references below which a text is unparsed (a floor);
    - `min_statement_probability`: the statement detector's probability below which a text is
      unparsed (None: no detector, the cosine alone decides);
    - `tails`: the detector's ordinary sentence tails (None: the packaged "train" tails);
    - `method`: "logistic" (default), "nearest" or "knn"; `k`, `temperature` for "knn";
    - `l2`, `fit_steps`, `learning_rate`, `momentum`: the logistic fits (read-out and detector);
      `pool_weight`: weight of a pool statement in the read-out's fit (an extra reference: 1);
    - `strip_connectives`: also compare with the references without their connective;
    - `exact_match`: a text equal to a reference statement takes its level directly;
    - `read_numbers`: a stated number ("60% sure", "4/5") is read as the number (`statements.numbers`);
    - `rewrite`: canonical form, double negations and negated wrappers (`statements.phrasing`);
    - `encoder`: a loaded `SentenceSimilarity` (bi-encoder) to use; else one is built lazily from
      `encoder_path` (default: the offline MiniLM) on `device`;
    - `cache_dir`: where reference embeddings are saved and reused (None: memory only).
    """

    kind: MapperKind = "statement"

    def __init__(self, pool: dict[int, Sequence[str]] | None = None, *,
                 extra_references: dict[int, Sequence[str]] | None = None,
                 min_similarity: float | None = DEFAULT_MIN_SIMILARITY,
                 min_statement_probability: float | None = DEFAULT_MIN_STATEMENT_PROBABILITY,
                 tails: Sequence[str] | None = None, method: Method = DEFAULT_METHOD,
                 k: int = 11, temperature: float = 0.05, l2: float = 3e-5, fit_steps: int = 3000,
                 learning_rate: float = 2.0, momentum: float = 0.9, pool_weight: float = 2.0,
                 strip_connectives: bool = True, exact_match: bool = True, read_numbers: bool = True,
                 rewrite: bool = True,
                 encoder: SentenceSimilarity | None = None, encoder_path: str | Path | None = None,
                 device: str | None = None, cache_dir: str | Path | None = None):
        if extra_references is None:
            extra_references = backward_pool() if pool is None else {}
        pool = default_pool() if pool is None else {int(lv): tuple(v) for lv, v in pool.items()}
        validate_pool(pool)
        if method not in ("logistic", "nearest", "knn"):
            raise ValueError(f"StatementMapper: method must be 'logistic', 'nearest' or 'knn', not {method!r}")
        if encoder is not None and getattr(encoder, "cross_encoder", False):
            raise ValueError("StatementMapper needs a bi-encoder (sentence embeddings), not a cross-encoder")
        self.pool: dict[int, tuple[str, ...]] = dict(sorted(pool.items()))
        self.extra_references = {int(lv): tuple(v) for lv, v in extra_references.items()}
        if set(self.extra_references) - set(LEVELS):
            raise ValueError(f"StatementMapper: extra_references levels must be in {LEVELS}")
        self.min_similarity = DEFAULT_MIN_SIMILARITY if min_similarity is None else float(min_similarity)
        self.min_statement_probability = None if min_statement_probability is None else float(min_statement_probability)
        self.tails = tuple(sentence_tails("train") if tails is None else tails)
        self.method: Method = method
        self.k = int(k)
        self.temperature = float(temperature)
        self.l2 = float(l2)
        self.fit_steps = int(fit_steps)
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.pool_weight = float(pool_weight)
        self.strip_connectives = strip_connectives
        self.exact_match = exact_match
        self.read_numbers = read_numbers
        self.rewrite = rewrite
        self.encoder_path = None if encoder_path is None else str(encoder_path)
        self.device = device
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._encoder = encoder
        texts, labels = backward_references(self.pool, self.extra_references, strip_connectives)
        self._texts: list[str] = texts
        self._labels = np.array(labels, dtype=np.int64)
        self._exact = {normalise(t): lv for t, lv in zip(texts, labels)}
        pool_forms = {normalise(strip_connective(s)) for v in self.pool.values() for s in v}
        self._in_pool = np.array([normalise(strip_connective(t)) in pool_forms for t in texts])
        self._forms = [self._form(t) for t in texts]
        self._exact_forms = dict(zip(self._forms, labels))
        self._pool_emb: np.ndarray | None = None
        self._tail_emb: np.ndarray | None = None
        self._weights: np.ndarray | None = None
        self._detector_weights: np.ndarray | None = None

    def _form(self, text: str) -> str:
        """What the encoder reads of a reference (its canonical form with `rewrite`)."""
        return canonical(text) if self.rewrite else text.strip()

    # --- forward -------------------------------------------------------------------------------

    def statement(self, level: int, rng: Rng = None) -> str:
        """A statement of `level`, drawn uniformly from its pool with `rng`."""
        options = self.pool[_check_level(level)]
        return options[int(as_generator(rng).integers(len(options)))]

    def statements(self, levels: Sequence[int], rng: Rng = None) -> list[str]:
        """One statement per level, drawn in order from one generator."""
        gen = as_generator(rng)
        return [self.statement(lv, gen) for lv in levels]

    # --- backward ------------------------------------------------------------------------------

    @property
    def encoder(self) -> SentenceSimilarity:
        """The sentence encoder (loaded on first use)."""
        if self._encoder is None:
            self._encoder = SentenceSimilarity(self.encoder_path, device=self.device)
        return self._encoder

    def _embedded_texts(self) -> list[str]:
        """What is embedded once: the references' forms, then (with a detector) the tails'."""
        tails = [self._form(t) for t in self.tails] if self.min_statement_probability is not None else []
        return self._forms + tails

    def _cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        key = "\n".join([str(self.encoder.path)] + [f"{lv}\t{t}" for t, lv in zip(self._forms, self._labels)]
                        + ["tails"] + self._embedded_texts()[len(self._forms):])
        return self.cache_dir / f"pool-emb-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:16]}.npy"

    @property
    def references(self) -> list[tuple[str, int]]:
        """The reference statements and their levels (the pool, the extra references, then their
        stripped forms)."""
        return list(zip(self._texts, self._labels.tolist()))

    def pool_embeddings(self) -> np.ndarray:
        """(N, D) L2-normalised embeddings of the reference statements (their canonical forms), in
        `references` order (computed once, with the detector's tails in the same encoder call)."""
        if self._pool_emb is None:
            texts = self._embedded_texts()
            path = self._cache_file()
            emb = np.load(path) if path is not None and path.exists() else None
            if emb is not None and emb.shape[0] != len(texts):
                emb = None
            if emb is None:
                emb = self.encoder.embed(texts)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, emb)
            emb = np.asarray(emb, dtype=np.float64)
            self._pool_emb, self._tail_emb = emb[:len(self._forms)], emb[len(self._forms):]
        return self._pool_emb

    def _fit(self, x: np.ndarray, labels: np.ndarray, n_classes: int, weights: np.ndarray | None) -> np.ndarray:
        settings = repr((self.l2, self.fit_steps, self.learning_rate, self.momentum)).encode()
        digest = hashlib.sha256(x.tobytes() + labels.tobytes() + (b"" if weights is None else weights.tobytes())
                                + settings).hexdigest()
        if digest not in _FITTED:
            if len(_FITTED) >= 8:
                _FITTED.pop(next(iter(_FITTED)))
            _FITTED[digest] = fit_softmax(x, labels, n_classes, l2=self.l2, steps=self.fit_steps,
                                          learning_rate=self.learning_rate, weights=weights,
                                          momentum=self.momentum)
        return _FITTED[digest]

    def _classifier(self) -> np.ndarray:
        """Weights of the read-out; a statement of the pool (and its stripped form) weighs
        `pool_weight`, an extra reference 1."""
        if self._weights is None:
            weights = np.where(self._in_pool, self.pool_weight, 1.0)
            self._weights = self._fit(self.pool_embeddings(), self._labels - 1, len(LEVELS), weights)
        return self._weights

    def _detector(self) -> np.ndarray:
        """Weights of the statement detector: references (1) against tails (0), each class with
        the same total weight."""
        if self._detector_weights is None:
            refs = self.pool_embeddings()
            tails = self._tail_emb
            x = np.vstack([refs, tails])
            labels = np.r_[np.ones(len(refs), dtype=np.int64), np.zeros(len(tails), dtype=np.int64)]
            weights = np.r_[np.full(len(refs), 1.0 / len(refs)), np.full(len(tails), 1.0 / max(len(tails), 1))]
            self._detector_weights = self._fit(x, labels, 2, weights)
        return self._detector_weights

    def statement_probability(self, emb: np.ndarray) -> np.ndarray:
        """For embeddings (M, D): the detector's probability that each is a confidence statement
        (M,); all 1 without a detector."""
        emb = np.asarray(emb, dtype=np.float64)
        if self.min_statement_probability is None or not len(self.tails):
            return np.ones(len(emb))
        return softmax(np.hstack([emb, np.ones((len(emb), 1))]) @ self._detector())[:, 1]

    def scores(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For embeddings (M, D): the best cosine to the references (M,) and per-level scores (M, 5)
        of the configured method (the predicted level is 1 + argmax)."""
        emb = np.asarray(emb, dtype=np.float64)
        sims = emb @ self.pool_embeddings().T
        best = sims.max(axis=1)
        if self.method == "logistic":
            w = self._classifier()
            level_scores = softmax(np.hstack([emb, np.ones((len(emb), 1))]) @ w)
        else:
            level_scores = np.zeros((len(emb), len(LEVELS)))
            k = 1 if self.method == "nearest" else min(self.k, sims.shape[1])
            top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            for i, idx in enumerate(top):
                weights = np.exp((sims[i, idx] - sims[i, idx].max()) / self.temperature)
                np.add.at(level_scores[i], self._labels[idx] - 1, weights)
        return best, level_scores

    def _plan(self, text: str) -> int | tuple[str, bool] | None:
        """Steps 1-3 for one text: its level (exact match, stated number), None (empty), or what
        the encoder reads and whether the level is then negated."""
        key = normalise(text)
        if not key:
            return None
        if self.exact_match and key in self._exact:
            return self._exact[key]
        if self.read_numbers:
            level = stated_level(text)
            if level is not None:
                return level
        form, negated = encoder_input(text) if self.rewrite else (text.strip(), False)
        if self.exact_match and form in self._exact_forms:
            level = self._exact_forms[form]
            return NEGATED[level] if negated else level
        if self.rewrite and not has_content(form):
            return None
        return form, negated

    def levels_of(self, texts: Sequence[str]) -> list[int | None]:
        """The level of each text, or None (empty, or no confidence statement); one encoder call
        for the texts not matched exactly. Every text must be a `str` (TypeError naming it
        otherwise)."""
        _check_texts(texts, "levels_of")
        out: list[int | None] = [None] * len(texts)
        todo: dict[str, list[tuple[int, bool]]] = {}
        for i, text in enumerate(texts):
            plan = self._plan(text)
            if isinstance(plan, tuple):
                todo.setdefault(plan[0], []).append((i, plan[1]))
            else:
                out[i] = plan
        if todo:
            self.pool_embeddings()
            forms = list(todo)
            emb = np.asarray(self.encoder.embed(forms), dtype=np.float64)
            best, level_scores = self.scores(emb)
            is_statement = (best >= self.min_similarity) & (
                self.statement_probability(emb) >= (self.min_statement_probability or 0.0))
            for j, form in enumerate(forms):
                if not is_statement[j]:
                    continue
                level = int(level_scores[j].argmax()) + 1
                for i, negated in todo[form]:
                    out[i] = NEGATED[level] if negated else level
        return out

    def level_of(self, text: str) -> int | None:
        """The level of one text (see `levels_of`); a TypeError naming `text` when it is no `str`."""
        require_text(text, "text", "level_of")
        return self.levels_of([text])[0]


def _literal_pattern(text: str) -> str:
    """Regex for a literal template part: whitespace runs match any whitespace, "/" may have
    spaces around it, everything else matches itself."""
    out = []
    for piece in re.split(r"(\s+|/)", text):
        if not piece:
            continue
        if piece.isspace():
            out.append(r"\s+")
        elif piece == "/":
            out.append(r"\s*/\s*")
        else:
            out.append(re.escape(piece))
    return "".join(out)


class NumericMapper:
    """The "w/o S-S mapping" ablation: the statement is the level as a number ("confidence 4/5")."""

    kind: MapperKind = "numeric"

    def __init__(self, template: str = "confidence {level}/5"):
        if "{level}" not in template or "," in template:
            raise ValueError("NumericMapper: template needs '{level}' and no comma")
        self.template = template
        prefix, suffix = template.split("{level}", 1)
        self._pattern = re.compile(r"\s*" + _literal_pattern(prefix) + r"(?P<level>[0-9]+)"
                                   + _literal_pattern(suffix) + r"\s*[.!?]?\s*", re.IGNORECASE)

    def statement(self, level: int, rng: Rng = None) -> str:
        """`template` with the level (rng accepted for interface parity, unused)."""
        return self.template.format(level=_check_level(level))

    def statements(self, levels: Sequence[int], rng: Rng = None) -> list[str]:
        return [self.statement(lv) for lv in levels]

    def level_of(self, text: str) -> int | None:
        """The level written in `text` if it is exactly the template with a level in 1..5, else None
        (a TypeError naming `text` when it is no `str`)."""
        m = self._pattern.fullmatch(require_text(text, "text", "level_of"))
        if m is None:
            return None
        level = int(m.group("level"))
        return level if level in LEVELS else None

    def levels_of(self, texts: Sequence[str]) -> list[int | None]:
        _check_texts(texts, "levels_of")
        return [self.level_of(t) for t in texts]


_STATEMENT_OPTIONS = frozenset(
    "pool extra_references min_similarity min_statement_probability tails method k temperature l2 fit_steps "
    "learning_rate momentum pool_weight strip_connectives exact_match read_numbers rewrite encoder "
    "encoder_path device cache_dir".split())


def make_mapper(kind: MapperKind = "statement", **options) -> StatementMapper | NumericMapper:
    """The mapper of a config's `statements.kind`; `options` go to its constructor
    (e.g. `min_similarity`, `method`, `encoder`, `cache_dir` for "statement"; `template` for
    "numeric"). Options that are None are dropped, so a config's "None: default" passes through;
    the statement mapper's options are ignored by "numeric", so one call serves both kinds."""
    options = {k: v for k, v in options.items() if v is not None}
    if kind == "statement":
        return StatementMapper(**options)
    if kind == "numeric":
        # Options of the statement mapper mean nothing here (one config serves both kinds).
        extra = set(options) - {"template"} - _STATEMENT_OPTIONS
        if extra:
            raise TypeError(f"make_mapper('numeric'): unexpected options {sorted(extra)}")
        return NumericMapper(**{k: v for k, v in options.items() if k == "template"})
    raise ValueError(f"make_mapper: kind must be 'statement' or 'numeric', not {kind!r}")

"""Level <-> confidence statement (method.md section 3).

Two mappers with one interface (`LevelMapper`), chosen by config through `make_mapper`:

`StatementMapper` (kind "statement", the paper):
- forward, level -> statement: a statement drawn uniformly from the pool of that level with a
  caller-given `numpy.random.Generator` (or an int seed), so SFT data are reproducible.
- backward, statement -> level, in these steps:
  1. **[choice]** exact match first: a text equal to a reference statement (a pool statement or
     its stripped form, see 2; compared by `normalise`: case, spacing and final punctuation
     ignored) gets that statement's level, so every pool statement maps back to its own level
     whatever the classifier does (the classifier alone also fits the whole pool);
  2. otherwise the text is embedded with the offline MiniLM encoder (`SentenceSimilarity`, cosine
     of L2-normalised embeddings) and compared with the reference statements: **[choice]**
     (`strip_connectives=True`) every pool statement, plus the same statement without its
     leading connective ("and", "but", "though", "although", "yet", "so", "while"): "but I am
     not sure" also gives "I am not sure". Pool statements all open with a connective, and "but"
     / "though" open most low-level ones, so without the stripped forms a free-form statement
     without one ("I am absolutely sure") is judged by its missing connective and lands at 2;
     with them it maps to 5. A stripped form already in the pool, or shared by two levels, is not
     added;
  3. **[choice]** `min_similarity=0.55`: if its best cosine to the references is below it, the
     text is no statement and stays unparsed (None). Measured on 21 hand-written tails of
     ordinary sentences ("and it is brown", "so the answer is no"): best cosine 0.3 (median) to
     0.51, all below 0.55; on 65 tuning paraphrases of statements, 4 fall below 0.55 (2 below
     0.5) and are lost. A tail wrongly read as a statement would reward a policy for writing
     anything after a comma, so the threshold errs on the side of unparsed. The margin is thin
     (0.51 against 0.55): a tail worded close to a statement can still pass;
  4. **[choice]** `method="logistic"`: the level is the argmax of a multinomial logistic
     regression fitted on the reference embeddings (features: the 384-d embedding and a bias; L2
     penalty `l2=1e-4` on the weights; full-batch gradient descent from zero, `fit_steps=3000`
     at `learning_rate=2.0`: deterministic, numpy only, a few seconds for the 335 references).
     Why: plain nearest neighbour ranks statements by topic ("confidence", "doubt", "sure")
     rather than by degree, so "with low confidence" lands next to "with high confidence"; a
     linear read-out fitted on a pool in which every level uses the same phrasing families
     ("with ... confidence", "I am ... sure", doubt statements) weighs the modifier instead.
     `method="nearest"` is the paper's plain nearest neighbour, `method="knn"` a vote of the `k`
     nearest references weighted by exp(cosine / `temperature`).
     On the project's own hand-written paraphrases (none of them in the pool, see
     tests/test_statements.py; 61 of them) with the 36-per-level pool, logistic gets 88.5% of
     levels exactly and 95% within one (unparsed counted as wrong), nearest neighbour 77% and 90%,
     the k-NN vote 82% and 89%. Its misses are boundary cases and one negation ("but I doubt this
     is right", 1, read as 4).
- The reference embeddings are computed once per mapper (one encoder call, on first backward
  use) and kept in memory; with `cache_dir` they are also saved as `.npy`, keyed by a hash of the encoder
  path and the pool, and reused by later mappers. The classifier is fitted once, after them (and
  once per process for identical embeddings and settings).
- `levels_of(texts)` maps a whole batch with ONE encoder call (texts that match the pool exactly,
  or are empty, are not embedded at all). The encoder is loaded lazily, so forward mapping
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
from mmboundary.statements.pool import LEVELS, default_pool, normalise, validate_pool
from mmboundary.steps import require_text

Method = Literal["logistic", "nearest", "knn"]
MapperKind = Literal["statement", "numeric"]
Rng = np.random.Generator | int | None

#: Defaults of the backward mapping (see the module docstring).
DEFAULT_MIN_SIMILARITY = 0.55
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
                steps: int = 3000, learning_rate: float = 2.0) -> np.ndarray:
    """Multinomial logistic regression by full-batch gradient descent from zero (deterministic).

    `x` (N, D), `labels` (N,) in 0..n_classes-1. Returns W of shape (D + 1, n_classes), the last
    row the bias (not penalised). Loss: mean cross-entropy + l2/2 * |W without bias|^2.
    """
    x = np.asarray(x, dtype=np.float64)
    xb = np.hstack([x, np.ones((len(x), 1))])
    xt = np.ascontiguousarray(xb.T) / len(xb)
    onehot = np.eye(n_classes)[np.asarray(labels)]
    w = np.zeros((xb.shape[1], n_classes))
    for _ in range(steps):
        p = softmax(xb @ w)
        grad = xt @ (p - onehot)
        grad[:-1] += l2 * w[:-1]
        w -= learning_rate * grad
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
    - `min_similarity`: best cosine to the pool below which a text is unparsed;
    - `method`: "logistic" (default), "nearest" or "knn"; `k`, `temperature` for "knn";
    - `l2`, `fit_steps`, `learning_rate`: the logistic fit;
    - `strip_connectives`: also compare with the pool statements without their connective;
    - `exact_match`: a text equal to a reference statement takes its level directly;
    - `encoder`: a loaded `SentenceSimilarity` (bi-encoder) to use; else one is built lazily from
      `encoder_path` (default: the offline MiniLM) on `device`;
    - `cache_dir`: where pool embeddings are saved and reused (None: memory only).
    """

    kind: MapperKind = "statement"

    def __init__(self, pool: dict[int, Sequence[str]] | None = None, *,
                 min_similarity: float | None = DEFAULT_MIN_SIMILARITY, method: Method = DEFAULT_METHOD,
                 k: int = 11, temperature: float = 0.05, l2: float = 1e-4, fit_steps: int = 3000,
                 learning_rate: float = 2.0, strip_connectives: bool = True, exact_match: bool = True,
                 encoder: SentenceSimilarity | None = None, encoder_path: str | Path | None = None,
                 device: str | None = None, cache_dir: str | Path | None = None):
        pool = default_pool() if pool is None else {int(lv): tuple(v) for lv, v in pool.items()}
        validate_pool(pool)
        if method not in ("logistic", "nearest", "knn"):
            raise ValueError(f"StatementMapper: method must be 'logistic', 'nearest' or 'knn', not {method!r}")
        if encoder is not None and getattr(encoder, "cross_encoder", False):
            raise ValueError("StatementMapper needs a bi-encoder (sentence embeddings), not a cross-encoder")
        self.pool: dict[int, tuple[str, ...]] = dict(sorted(pool.items()))
        self.min_similarity = DEFAULT_MIN_SIMILARITY if min_similarity is None else float(min_similarity)
        self.method: Method = method
        self.k = int(k)
        self.temperature = float(temperature)
        self.l2 = float(l2)
        self.fit_steps = int(fit_steps)
        self.learning_rate = float(learning_rate)
        self.strip_connectives = strip_connectives
        self.exact_match = exact_match
        self.encoder_path = None if encoder_path is None else str(encoder_path)
        self.device = device
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._encoder = encoder
        texts, labels = reference_statements(self.pool, strip_connectives)
        self._texts: list[str] = texts
        self._labels = np.array(labels, dtype=np.int64)
        self._exact = {normalise(t): lv for t, lv in zip(texts, labels)}
        self._pool_emb: np.ndarray | None = None
        self._weights: np.ndarray | None = None

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

    def _cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        key = "\n".join([str(self.encoder.path)] + [f"{lv}\t{t}" for t, lv in zip(self._texts, self._labels)])
        return self.cache_dir / f"pool-emb-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:16]}.npy"

    @property
    def references(self) -> list[tuple[str, int]]:
        """The reference statements and their levels (the pool, then its stripped forms)."""
        return list(zip(self._texts, self._labels.tolist()))

    def pool_embeddings(self) -> np.ndarray:
        """(N, D) L2-normalised embeddings of the reference statements, in `references` order
        (computed once)."""
        if self._pool_emb is None:
            path = self._cache_file()
            if path is not None and path.exists():
                emb = np.load(path)
                if emb.shape[0] != len(self._texts):
                    emb = None
            else:
                emb = None
            if emb is None:
                emb = self.encoder.embed(self._texts)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, emb)
            self._pool_emb = np.asarray(emb, dtype=np.float64)
        return self._pool_emb

    def _classifier(self) -> np.ndarray:
        if self._weights is None:
            emb = self.pool_embeddings()
            digest = hashlib.sha256(emb.tobytes() + self._labels.tobytes()
                                    + repr((self.l2, self.fit_steps, self.learning_rate)).encode()).hexdigest()
            if digest not in _FITTED:
                if len(_FITTED) >= 8:
                    _FITTED.pop(next(iter(_FITTED)))
                _FITTED[digest] = fit_softmax(emb, self._labels - 1, len(LEVELS), l2=self.l2,
                                              steps=self.fit_steps, learning_rate=self.learning_rate)
            self._weights = _FITTED[digest]
        return self._weights

    def scores(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For embeddings (M, D): the best cosine to the pool (M,) and per-level scores (M, 5)
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

    def levels_of(self, texts: Sequence[str]) -> list[int | None]:
        """The level of each text, or None (empty, or too far from every pool statement);
        one encoder call for the texts not matched exactly. Every text must be a `str`
        (TypeError naming it otherwise)."""
        _check_texts(texts, "levels_of")
        out: list[int | None] = [None] * len(texts)
        todo: list[int] = []
        for i, text in enumerate(texts):
            key = normalise(text)
            if not key:
                continue
            if self.exact_match and key in self._exact:
                out[i] = self._exact[key]
            else:
                todo.append(i)
        if todo:
            self.pool_embeddings()
            emb = self.encoder.embed([str(texts[i]).strip() for i in todo])
            best, level_scores = self.scores(emb)
            for j, i in enumerate(todo):
                if best[j] >= self.min_similarity:
                    out[i] = int(level_scores[j].argmax()) + 1
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
    "pool min_similarity method k temperature l2 fit_steps learning_rate exact_match encoder "
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

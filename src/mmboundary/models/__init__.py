"""Models: one factory for the VLM kinds (tiny, smol, pretrained) and the small CLIP, all through
Hugging Face classes (see `factory`, `vlm`, `clip`)."""

from mmboundary.models.clip import Clip, ClipProcessor, build_clip, clip_embed, clip_similarity, load_clip, save_clip
from mmboundary.models.factory import build_model, build_smol, build_tiny, load_vlm
from mmboundary.models.spec import ClipSpec, ModelSpec
from mmboundary.models.tokenizer import train_tokenizer
from mmboundary.models.vlm import IGNORE_INDEX, VLM, load_image, question_text

__all__ = [
    "IGNORE_INDEX", "VLM", "Clip", "ClipProcessor", "ClipSpec", "ModelSpec", "build_clip", "build_model", "build_smol",
    "build_tiny", "clip_embed", "clip_similarity", "load_clip", "load_image", "load_vlm", "question_text",
    "save_clip", "train_tokenizer",
]

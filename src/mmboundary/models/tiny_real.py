"""Tiny random checkpoints of the paper's two real architectures, LLaVA-NeXT and Qwen2-VL, for
offline tests of the `model.kind: pretrained` code path (no hub download).

    save_tiny_llava_next(dir, tokenizer)   # LlavaNextForConditionalGeneration + LlavaNextProcessor
    save_tiny_qwen2_vl(dir, tokenizer)     # Qwen2VLForConditionalGeneration + its processor files

Each writes a Hugging Face checkpoint folder, exactly the files a hub checkpoint has (config,
safetensors weights, tokenizer, image processor, chat template) and no `mmboundary_model.json`,
so `load_vlm(dir)` treats it as any downloaded 7B checkpoint: `AutoModelForImageTextToText` +
`AutoProcessor` (or, for Qwen2-VL without torchvision, `qwen2_vl.Qwen2VLImageProcessor`).

The architectures are the real ones at toy sizes (hidden size 64, two layers): LLaVA-NeXT with a
CLIP vision tower, any-resolution tiles (grid pinpoints up to 64 px, 8-px patches) and a Llama
text model (the 7B is Mistral, the same decoder layout); Qwen2-VL with its own vision tower
(14-px patches, 2x2 merge, images of 28^2 to 56^2 pixels -> 1 to 4 image tokens) and 3-D rope.
The chat templates below reproduce the prompt layout of the hub checkpoints
(`llava-hf/llava-v1.6-mistral-7b-hf`: `[INST] <image>\\n{question} [/INST]`;
`Qwen/Qwen2-VL-7B-Instruct`: ChatML with a system turn and
`<|vision_start|><|image_pad|><|vision_end|>`), written for this project.

The tokenizer is the caller's (e.g. `train_tokenizer` on the run's texts); the model-specific
special tokens are added to a copy of it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)

from mmboundary.models.qwen2_vl import Qwen2VLImageProcessor

LLAVA_NEXT_MISTRAL_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ '[INST] ' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}{%- endif -%}{%- endfor -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}{{ ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- if message['content'] is string -%}{{ ' ' + message['content'] }}{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ ' ' + part['text'] }}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}{{ eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

QWEN2_VL_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif -%}"
    "{%- for message in messages -%}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{ '<|im_end|>\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=1024)


def _with_tokens(tokenizer, tokens: list[str]):
    tok = copy.deepcopy(tokenizer)
    # a tokenizer that once went into another processor (e.g. the tiny LLaVA's) remembers that
    # processor's class and would write it into tokenizer_config.json, where AutoProcessor reads it
    tok._processor_class = None
    missing = [t for t in tokens if t not in tok.get_vocab()]
    if missing:
        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return tok


def _finish(model, tok, directory: Path) -> Path:
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(directory)
    return directory


def save_tiny_llava_next(directory: str | Path, tokenizer, *, seed: int = 0) -> Path:
    """A random tiny LLaVA-NeXT checkpoint (see the module docstring) written to `directory`."""
    directory = Path(directory)
    tok = _with_tokens(tokenizer, ["<image>"])
    pins = [[32, 32], [32, 64], [64, 32], [64, 64]]
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                    image_grid_pinpoints=pins)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=8,
                              vision_feature_select_strategy="default", image_token="<image>",
                              num_additional_image_tokens=1, chat_template=LLAVA_NEXT_MISTRAL_TEMPLATE)
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, patch_size=8, image_size=32),
        text_config=LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                eos_token_id=tok.eos_token_id, **_TEXT),
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pins,
        vision_feature_layer=-1, vision_feature_select_strategy="default", image_seq_length=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaNextForConditionalGeneration(config)
    proc.save_pretrained(directory)
    return _finish(model, tok, directory)


def save_tiny_qwen2_vl(directory: str | Path, tokenizer, *, seed: int = 0) -> Path:
    """A random tiny Qwen2-VL checkpoint (see the module docstring) written to `directory`. The
    eos is `<|im_end|>` and the pad `<|endoftext|>`, as in Qwen2-VL-7B-Instruct."""
    directory = Path(directory)
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_start|>",
                "<|im_end|>", "<|endoftext|>"]
    tok = _with_tokens(tokenizer, specials)
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    vs, ve, ipad, vpad = tok.convert_tokens_to_ids(specials[:4])
    ip = Qwen2VLImageProcessorPil(size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56})
    proc = Qwen2VLImageProcessor(ip, tok, QWEN2_VL_TEMPLATE)
    text = dict(_TEXT, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4})
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, **text),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ipad, video_token_id=vpad, vision_start_token_id=vs, vision_end_token_id=ve,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config)
    proc.save_pretrained(directory)
    return _finish(model, tok, directory)

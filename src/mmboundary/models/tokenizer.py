"""A small byte-level BPE tokenizer trained on the project's own texts (for the tiny models).

Byte-level: every string can be encoded (unknown characters fall back to their UTF-8 bytes), and
the words of the training corpus become single tokens once `vocab_size` leaves room for them.
Training is deterministic for the same texts in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, IMAGE, UNK = "<pad>", "<s>", "</s>", "<image>", "<unk>"
# Order fixes the ids: pad 0, unk 1, bos 2, eos 3, image 4. The eos id is deliberately not 2:
# CLIP's text model treats eos_token_id == 2 as "pool at the largest token id" (a legacy rule).
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, IMAGE)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1024,
    *,
    padding_side: Literal["left", "right"] = "right",
    min_frequency: int = 1,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and wrap it as a `PreTrainedTokenizerFast`.

    - Special tokens `<pad>`, `<unk>`, `<s>`, `</s>`, `<image>` have ids 0..4; `pad_token`,
      `bos_token`, `eos_token`, `unk_token` are set, `<image>` is available as
      `tokenizer.image_token` / `tokenizer.image_token_id`.
    - Encoding with `add_special_tokens=True` (the default) prepends `<s>`; `</s>` is never added
      automatically (callers append `eos_token_id` where a sequence ends).
    - `padding_side` is the default padding side; generation needs "left" (change it later with
      `tokenizer.padding_side = "left"` or per call with `padding_side=`).
    """
    texts = list(texts)
    if not texts:
        raise ValueError("train_tokenizer needs at least one text")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} is below the byte alphabet + special tokens "
                         f"({len(alphabet) + len(SPECIAL_TOKENS)})")
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE},
        padding_side=padding_side,
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000,
    )
    return hf

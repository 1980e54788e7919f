"""Worker of the 2-process test of `tests/test_rl.py` (launched by `accelerate launch`).

Builds a tiny VLM and a FIXED batch of hand-made rollouts (the same on every process), takes
this process's contiguous shard, scores it, prepares advantages (whitened over all processes)
and runs `ppo_update` with SGD (2 epochs, one minibatch per epoch); the main process saves the
resulting weights and the update's statistics to the file named by argv[1]."""

from __future__ import annotations

import json
import sys

import torch
from PIL import Image, ImageDraw


def main(out_path: str) -> None:
    from safetensors.torch import save_file

    from mmboundary.confidence.scorer import token_char_ends
    from mmboundary.distributed import make_accelerator
    from mmboundary.models.factory import build_tiny
    from mmboundary.models.spec import ModelSpec
    from mmboundary.models.tokenizer import train_tokenizer
    from mmboundary.statements.chain_format import parse_chain
    from mmboundary.statements.mapping import NumericMapper
    from mmboundary.training.ppo import ppo_update, prepare_batch
    from mmboundary.training.rl_config import RLConfig
    from mmboundary.training.samples import Sample, build_rollout
    from mmboundary.training.scoring import score_samples
    from mmboundary.training.value_head import PolicyWithValue, ValueHead, hidden_size_of

    acc = make_accelerator("cpu")
    sentences = ["There are 2 circles", "There is 1 red square", "2 plus 1 is 3", "So the answer is 3"]
    corpus = ([f"{s}, confidence {k}/5." for s in sentences for k in range(1, 6)]
              + ["How many shapes?", "Question: Answer:"])
    tok = train_tokenizer(corpus * 3, 400)
    spec = ModelSpec(text_num_layers=1, text_hidden_size=32, text_intermediate_size=64, vision_hidden_size=32,
                     vision_num_layers=1, vision_intermediate_size=64, max_length=128)
    policy = build_tiny(tok, spec, seed=0)
    reference = build_tiny(tok, spec, seed=0)
    with torch.no_grad():
        reference.model.lm_head.weight.add_(0.05 * torch.randn(reference.model.lm_head.weight.shape,
                                                               generator=torch.Generator().manual_seed(5)))
    mapper = NumericMapper()
    g = torch.Generator().manual_seed(1)
    samples = []
    for i in range(4):  # 4 responses, 2 per process
        steps = [sentences[(i + j) % 3] for j in range(1 + i % 2)] + [sentences[3]]
        levels = [1 + int(torch.randint(0, 5, (1,), generator=g)) for _ in steps]
        text = " ".join(f"{s}, confidence {lv}/5." for s, lv in zip(steps, levels))
        if i == 2:
            text += " and then"  # a trailing fragment without statement
        ids = tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if i != 3 else [])
        text_, ends = token_char_ends(tok, ids)
        parsed = parse_chain(text_, mapper)
        n = len(parsed.steps)
        correct = [int(torch.randint(0, 2, (1,), generator=g)) for _ in range(n)]
        internal = [1 + int(torch.randint(0, 5, (1,), generator=g)) for _ in range(n)]
        rollout, _ = build_rollout(f"q{i}", 0, ids, ends, parsed, correct, internal, correct[-1])
        img = Image.new("RGB", (48, 48), "white")
        ImageDraw.Draw(img).rectangle((4 + 4 * i, 8, 30, 30), fill=["red", "blue", "green", "purple"][i])
        samples.append(Sample(rollout=rollout, prompt=policy.prompt_text("How many shapes?"), image=img,
                              text=text_, group=i))
    per = len(samples) // acc.num_processes
    mine = samples[acc.process_index * per:(acc.process_index + 1) * per]
    cfg = RLConfig(ppo_epochs=2, minibatch_size=per, lr=0.0, kl_coef=0.1, ent_coef=0.01, value_clip=None)
    head = ValueHead(hidden_size_of(policy.model), init_std=0.05, seed=3)
    pv = PolicyWithValue(policy.model, head)
    opt = torch.optim.SGD([p for p in pv.parameters() if p.requires_grad], lr=0.5)
    scored = score_samples(pv, policy, reference.model, mine, batch_size=per)
    batch = prepare_batch(scored, cfg, kl_coef=cfg.kl_coef, accelerator=acc)
    pv_ddp, opt = acc.prepare(pv, opt)
    stats = ppo_update(pv_ddp, policy, batch, cfg, acc, opt)
    if acc.is_main_process:
        save_file({k: v.detach().contiguous() for k, v in pv.state_dict().items()}, out_path)
        with open(out_path + ".json", "w") as f:
            json.dump(stats, f)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])

"""One-process check of :class:`DeepSpeedStrategy` against plain AdamW (run by test_deepspeed.py).

Two accumulation windows of two micro-steps on a tiny MLP, ZeRO-2, fp32, with clipping active;
prints a JSON line with the largest parameter/norm differences.
"""

from __future__ import annotations

import copy
import json
import sys

import torch

from stream_r1.distributed.deepspeed_strategy import DeepSpeedStrategy


def main() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    ref, init = copy.deepcopy(model), copy.deepcopy(model)
    kw = {"lr": 1e-2, "betas": (0.0, 0.999), "eps": 1e-8, "weight_decay": 0.01}
    clip = 0.05  # well below the gradient norm: clipping is exercised
    strategy = DeepSpeedStrategy(zero_stage=int(sys.argv[1]) if len(sys.argv) > 1 else 2, param_dtype="float32", grad_clip_norm=clip, grad_accum_steps=2,
                                 micro_batch_size=3)
    opt = strategy.attach_optimizer(model, torch.optim.AdamW(model.parameters(), **kw))
    ref_opt = torch.optim.AdamW(ref.parameters(), **kw)
    x = torch.randn(4, 3, 4)
    norms, ref_norms = [], []
    for window in range(2):
        strategy.zero_grad(model, opt)
        ref_opt.zero_grad(set_to_none=True)
        for micro in range(2):
            batch = x[window * 2 + micro]
            strategy.set_gradient_sync(model, micro == 1)
            strategy.backward(model, model(batch).pow(2).mean() / 2)
            (ref(batch).pow(2).mean() / 2).backward()
        norms.append(strategy.optimizer_step(model, opt, clip))
        ref_norms.append(float(torch.nn.utils.clip_grad_norm_(ref.parameters(), clip)))
        ref_opt.step()
    param_diff = max(float((a.detach() - b.detach()).abs().max()) for a, b in zip(model.parameters(), ref.parameters(), strict=True))
    moved = max(float((a.detach() - b.detach()).abs().max()) for a, b in zip(ref.parameters(), init.parameters(), strict=True))
    print(json.dumps({"param_max_abs_diff": param_diff, "moved": moved, "norms": norms, "ref_norms": ref_norms,
                      "optimizer": type(opt).__name__}))


if __name__ == "__main__":
    main()

"""EMA arithmetic (fp32, CPU, decay 0.99) and the AdamW settings (beta1 = 0)."""

from __future__ import annotations

import pytest
import torch

from stream_r1.config.schema import OptimConfig
from stream_r1.distributed.state_dicts import full_model_state_dict
from stream_r1.train.ema import EMA
from stream_r1.train.optim import build_adamw


def test_ema_update_arithmetic():
    m = torch.nn.Linear(3, 2)
    ema = EMA.create(m, 0.99, full_model_state_dict)
    w0 = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)
    torch.testing.assert_close(ema.shadow["weight"], 0.99 * w0 + 0.01 * (w0 + 1.0))
    assert ema.shadow["weight"].dtype == torch.float32 and ema.shadow["weight"].device.type == "cpu"
    state = ema.state_dict()
    other = EMA(0.5, full_model_state_dict)
    other.load_state_dict(state)
    assert other.decay == 0.99 and other.num_updates == 1
    torch.testing.assert_close(other.shadow["bias"], ema.shadow["bias"])


def test_ema_bad_decay():
    with pytest.raises(ValueError, match=r"decay=1\.0"):
        EMA(1.0, full_model_state_dict)


def test_adamw_settings():
    m = torch.nn.Linear(3, 2)
    opt = build_adamw(m, 2e-6, OptimConfig())
    g = opt.param_groups[0]
    assert g["betas"] == (0.0, 0.999) and g["weight_decay"] == 0.01 and g["lr"] == 2e-6
    with pytest.raises(ValueError, match="learning rate"):
        build_adamw(m, 0.0, OptimConfig())

"""featurenerf.compiled: the one place that knows torch.compile's wrapper."""

from __future__ import annotations

import torch
from torch import nn

from featurenerf.compiled import is_compiled, uncompiled_key, unwrap_compiled


def test_unwrap_gives_the_plain_module_and_leaves_a_plain_one_alone():
    plain = nn.Linear(3, 2)
    wrapped = torch.compile(plain)  # compiles lazily, on the first call: nothing is compiled here
    assert is_compiled(wrapped) and not is_compiled(plain)
    assert unwrap_compiled(wrapped) is plain
    assert unwrap_compiled(plain) is plain


def test_uncompiled_keys_load_into_the_plain_module():
    net = nn.Sequential(nn.Linear(3, 2))
    holder = nn.Module()
    holder.mlp = torch.compile(net)
    keys = list(holder.state_dict())
    assert keys == ["mlp._orig_mod.0.weight", "mlp._orig_mod.0.bias"]
    assert [uncompiled_key(k) for k in keys] == ["mlp.0.weight", "mlp.0.bias"]
    assert uncompiled_key("_orig_mod.0.weight") == "0.weight"
    assert uncompiled_key("mlp.0.weight") == "mlp.0.weight"

"""Shared fixtures for the measure tests: reference MAC counts from torch.utils.flop_counter."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from secateurs._inputs import call_model


def _reference_macs(model: torch.nn.Module, example_inputs: Any) -> float:
    """MACs by FlopCounterMode, with the math attention kernel and no MHA fast path so no fused op hides work."""
    training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.inference_mode():
            call_model(model.eval(), example_inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(training)
    return counter.get_total_flops() / 2


@pytest.fixture(scope="session")
def reference_macs() -> Callable[[torch.nn.Module, Any], float]:
    """FlopCounterMode's count for a model, halved to MACs (see ``_reference_macs``)."""
    return _reference_macs

"""Every public entry point names a wrongly typed argument before any work, never failing deep inside torch,
numpy or json, and never reading a string or a tensor given for a flag by its truth value."""
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import posttrain, search
from secateurs._inputs import check_bool, check_device, check_path


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 16, 4)).eval()


X = torch.randn(1, 3, 4, 4)
MODEL = _net()
SMALL = sc.prune(MODEL, X, 0.5)
SENS = search.sensitivity(MODEL, X, lambda m: 1.0, ratios=(0.5,), quiet=True)
TENSOR = torch.ones(2)

CASES = {
    "explore seed": (lambda: sc.explore(MODEL, X, "fidelity", seed="1", quiet=True), "seed must be an integer"),
    "explore threads": (lambda: sc.explore(MODEL, X, "fidelity", threads="2", quiet=True),
                        "threads must be an integer >= 1"),
    "explore latency": (lambda: sc.explore(MODEL, X, "fidelity", latency="no", quiet=True),
                        "latency must be True or False, got 'no'"),
    "explore quiet": (lambda: sc.explore(MODEL, X, "fidelity", quiet=TENSOR), "quiet must be True or False"),
    "explore plan_kwargs": (lambda: sc.explore(MODEL, X, "fidelity", plan_kwargs="x", quiet=True),
                            "plan_kwargs must be a dict of sc.plan arguments or None, got str"),
    "explore targets": (lambda: sc.explore(MODEL, X, "fidelity", targets=TENSOR, quiet=True),
                        r"targets must be a dict such as \{'macs': 0.5\} or a list of them, got Tensor"),
    "sensitivity graph": (lambda: search.sensitivity(MODEL, X, lambda m: 1.0, graph="g", quiet=True),
                          "graph must be a Graph made by sc.trace"),
    "sensitivity quiet": (lambda: search.sensitivity(MODEL, X, lambda m: 1.0, quiet="yes"),
                          "quiet must be True or False"),
    "allocate graph": (lambda: search.allocate(MODEL, X, SENS, {"params": 0.7}, graph=[]),
                       "graph must be a Graph made by sc.trace"),
    "allocate sens": (lambda: search.allocate(MODEL, X, {"groups": []}, {"params": 0.7}),
                      "sensitivity data is missing key 'baseline'"),
    "allocate sens values": (lambda: search.allocate(MODEL, X, dict(SENS.to_dict(), baseline="high"),
                                                     {"params": 0.7}), "sensitivity data is malformed"),
    "allocate latency_kwargs": (lambda: search.allocate(MODEL, X, SENS, {"latency": 0.7}, latency_kwargs=TENSOR),
                                "latency_kwargs must be a dict"),
    "LatencyTable device": (lambda: sc.LatencyTable(1, device="gpu"), "device 'gpu' is not a torch device"),
    "LatencyTable persist": (lambda: sc.LatencyTable(1, persist="no"), "persist must be True or False"),
    "posttrain owl": (lambda: posttrain.prune(MODEL, [X], "wanda", 0.5, owl=TENSOR, progress=False),
                      "owl must be True or False"),
    "posttrain progress": (lambda: posttrain.prune(MODEL, [X], "wanda", 0.5, progress="no"),
                           "progress must be True or False"),
    "export_onnx atol": (lambda: sc.export_onnx(SMALL, X, "m.onnx", atol=None),
                         r"atol must be a number in \[0, inf\), got None"),
    "export_onnx verify": (lambda: sc.export_onnx(SMALL, X, "m.onnx", verify="yes"), "verify must be True or False"),
    "measure latency": (lambda: sc.measure(MODEL, X, latency=np.array([1, 0])), "latency must be True or False"),
    "quantize per_channel": (lambda: sc.quantize(SMALL, X, per_channel="yes"), "per_channel must be True or False"),
    "Pruner regrow": (lambda: sc.Pruner(MODEL, X, sc.Constant(0.5, 0, 1), regrow=1), "regrow must be True or False"),
    "finalize": (lambda: sc.finalize([MODEL]), "model must be a torch.nn.Module, got list"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_wrong_argument_is_named_from_secateurs(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # export_onnx's path, were it reached
    call, message = CASES[case]
    with pytest.raises((TypeError, ValueError), match=message) as exc:
        call()
    assert "secateurs" in traceback.extract_tb(exc.tb)[-1].filename  # raised by our check, not from deep inside
    assert not list(tmp_path.iterdir())  # nothing written


def test_flags_paths_and_devices():
    assert check_bool(np.bool_(True), "f") is True and check_bool(False, "f") is False
    for bad in ("True", 1, None, TENSOR):
        with pytest.raises(ValueError, match="f must be True or False"):
            check_bool(bad, "f")
    assert check_path(Path("a/b"), "directory") == "a/b"
    with pytest.raises(TypeError, match=r"directory must be a path \(str or os.PathLike\), got int"):
        check_path(3, "directory")
    assert check_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"--device cuda is not available on this machine .*; use cpu"):
            check_device("cuda", "--device", "use cpu")

"""Does distillation from the dense model help recovery? A one-off measurement, not a test (pytest skips it).

MNIST-1D CNN (40 epochs of ``fit``, cached), channels pruned 70% (``sc.prune(model, x, ratio=0.7)``, l2),
then ``recover`` for the same number of steps with and without the dense model as teacher, 3 seeds
each (the seed drives the DataLoader's shuffling). Run: ``python tests/train/kd_measurement.py``.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import secateurs as sc
from secateurs.examples import accuracy, fit_cached, mnist1d, mnist1d_cnn
from secateurs.posttrain import recalibrate
from secateurs.train import recover

torch.set_num_threads(1)
x, y, xt, yt = mnist1d()
dense = fit_cached("mnist1d-mnist1d_cnn", mnist1d_cnn(), x, y, epochs=40, lr=3e-3, batch_size=128, seed=0)
small = sc.prune(dense, x[:64], ratio=0.7)
print(f"dense {accuracy(dense, xt, yt):.3f}  params {sum(p.numel() for p in dense.parameters())} -> "
      f"{sum(p.numel() for p in small.parameters())}")
print(f"pruned 70%: {accuracy(small, xt, yt):.3f}, with BN statistics re-estimated: "
      f"{accuracy(recalibrate(small, x.split(128)), xt, yt):.3f}")
loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True)  # 32 steps per epoch

configs = {"no teacher": {}, "KD T=2 a=0.5 (defaults)": {"teacher": dense},
           "KD T=4 a=0.9": {"teacher": dense, "temperature": 4.0, "alpha": 0.9}}
for steps in (100, 500):
    for name, kw in configs.items():
        accs, t0 = [], time.perf_counter()
        for seed in (0, 1, 2):
            m = recover(copy.deepcopy(small), loader, steps=steps, lr=3e-3, seed=seed, **kw)
            accs.append(accuracy(m, xt, yt))
        print(f"steps {steps:4d}  {name:24s} mean {statistics.mean(accs):.4f} sd {statistics.stdev(accs):.4f} "
              f"{[round(a, 3) for a in accs]}  {(time.perf_counter() - t0) / 3:.1f} s/run")

"""Scale-out: a 16-candidate MNIST-1D sweep with fine-tuning, serially and on a local 2-CPU Ray instance.

    python benchmarks/scale.py [--budget 200] [--cpus 2] [--workdir runs/scale]

Both sweeps run the same 16 candidates (the dense CNN, then 3 methods x 5 ratios, each fine-tuned
for ``--budget`` steps with distillation from the dense model), one torch thread per candidate.
Printed: the serial time, Ray's start-up time, the Ray sweep's time (worker start-up, the tasks,
and the driver's interleaved latency re-measurement included), their ratio, and whether both sweeps
produced the same plans and qualities (they must: the candidate job is a pure function).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")  # Ray workers import this checkout

import torch  # noqa: E402

import secateurs as sc  # noqa: E402
from secateurs.examples import data as D  # noqa: E402
from secateurs.examples import models as M  # noqa: E402
from secateurs.examples import train as T  # noqa: E402
from secateurs.search import RayExecutor  # noqa: E402
from secateurs.train import recover  # noqa: E402

METHODS = ("channel/l2/local", "channel/lamp/global", "channel/bn_scale/global")
RATIOS = (0.3, 0.4, 0.5, 0.6, 0.7)


def read(path: str) -> str:
    """The text of the file at ``path``."""
    with open(path) as f:
        return f.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=200, help="fine-tuning steps per candidate")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance (one task per CPU)")
    ap.add_argument("--workdir", default="runs/scale")
    args = ap.parse_args()
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = D.mnist1d(seed=0)
    model = T.fit_cached("mnist1d_cnn", M.mnist1d_cnn(seed=0), x_train, y_train, epochs=40, lr=3e-3, seed=0)
    batches = T.batches(x_train, y_train, batch_size=128, n=len(x_train) // 128, seed=0)

    def evaluate(m: torch.nn.Module) -> float:
        return T.accuracy(m, x_test, y_test)

    def finetune(m: torch.nn.Module, steps: int) -> torch.nn.Module:
        return recover(m, batches, steps=steps, lr=3e-3, teacher=model, seed=0)

    kw = dict(finetune=finetune, budget=args.budget, methods=METHODS, ratios=RATIOS, threads=1, quiet=True)
    shutil.rmtree(args.workdir, ignore_errors=True)
    t0 = time.perf_counter()
    serial = sc.explore(model, x_test[:256], evaluate, workdir=os.path.join(args.workdir, "serial"), **kw)
    serial_s = time.perf_counter() - t0

    import ray
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    spread = sc.explore(model, x_test[:256], evaluate, workdir=os.path.join(args.workdir, "ray"),
                        executor=RayExecutor(num_cpus=1), **kw)
    ray_s = time.perf_counter() - t0
    ray.shutdown()

    same = ([(c.name, c.quality, c.measurement["macs"]) for c in serial.candidates]
            == [(c.name, c.quality, c.measurement["macs"]) for c in spread.candidates])
    same_plans = all(read(os.path.join(args.workdir, "serial", a.plan_path))
                     == read(os.path.join(args.workdir, "ray", b.plan_path))
                     for a, b in zip(serial.candidates, spread.candidates) if a.plan_path)
    print(f"{len(serial.candidates)} candidates, {args.budget} fine-tuning steps each, 1 torch thread per candidate, "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average before the Ray sweep "
          f"{os.getloadavg()[0]:.1f}")
    print(f"serial (LocalExecutor):          {serial_s:7.1f} s")
    print(f"Ray start-up (ray.init, {args.cpus} CPUs): {init_s:7.1f} s (not in the Ray sweep's time)")
    print(f"Ray sweep ({args.cpus} tasks at a time):    {ray_s:7.1f} s  -> {serial_s / ray_s:.2f}x faster")
    print(f"same plans: {same_plans}; same qualities and MACs: {same}")
    print()
    print(spread.table())


if __name__ == "__main__":
    main()

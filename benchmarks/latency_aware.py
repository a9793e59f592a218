"""Latency-aware widths: are secateurs' pruned models faster than their MACs cut suggests, against Torch-Pruning?

Three parts, one run, one thread, every comparison timed interleaved (``sc.measure.compare_latency``:
one forward of each model per round, so load on the machine hits all of them alike; median and
p10-p90 spread). Torchvision models are randomly initialised (speed does not depend on weights).

1. **Ratio 0.5** (``--models`` x ``--batches``): each model pruned by channels at ratio 0.5, L2
   magnitude, local, four ways: secateurs with ``round_to=1`` (widths by importance alone),
   ``round_to=16`` and ``round_to="auto"`` (each width snapped to a fast point of this machine's
   measured latency table), and Torch-Pruning 1.6.1 (``MetaPruner``, ``MagnitudeImportance(p=2)``,
   uniform ``pruning_ratio=0.5``, the classifier ignored). The figure of merit is
   ``speed-up / MACs cut``: above 1.0 a pruned model is faster than its MACs reduction alone predicts.
   With ``--fastest-ratios`` (default ``0.5,0.9``) three more rows: ``fastest@MxTP``, allocated by
   latency (``sc.search.latency_sensitivity``: each group pruned alone, scored by the latency table's
   predicted milliseconds, BatchNorm, activations and pools included; then ``allocate(..., {"macs": f})``) at
   M = 1, 1.15 and 1.3 times Torch-Pruning's MACs, every width a multiple of ``--fastest-round-to``
   (default 8: one AVX2 vector of float32, the block oneDNN's CPU convolutions work in); a second
   table compares their measured latency and MACs with Torch-Pruning's, from the same interleaved timing.
2. **Equal latency** (``--equal-models`` at ``--equal-batch``): ``sc.search.allocate(model, x, sens,
   {"latency": 1.0}, latency_reference=uniform, latency_tolerance=TOLERANCE)``, ``uniform`` being
   Torch-Pruning's uniform-50% model (secateurs' own uniform 50% where Torch-Pruning fails on a model):
   as fast as that model, every candidate timed back to back with it in each round
   (``sc.measure.latency_ratio``, the median per-round ratio: load that drifts during the search
   cancels), while keeping as many MACs as it can: its sensitivity's "quality" is the fraction of the
   dense model's MACs a pruned model keeps (capacity), its savings are read off the latency table and
   it verifies on the measured model. The allocated and the uniform models are then timed
   interleaved; reported: MACs kept against the uniform model's, the per-round latency ratio, and
   whether the latencies are equal within the p10-p90 spread.
3. **MNIST-1D** (``--mnist1d``, per seed of ``--seeds``): the trained demo CNN pruned uniformly at
   ratio 0.5, then allocated to be as fast as that model (as in part 2; sensitivity and ``evaluate``
   = accuracy on 1000 training samples after a short fine-tune on the others; the uniform ratio
   meeting the same target is returned unless the allocation scores ``MIN_GAIN`` higher after the
   full fine-tune), and ``round_to="auto"`` at 0.5; each
   fine-tuned the same ``--steps`` steps; test accuracy at (interleaved) measured latency.

Run::

    python benchmarks/latency_aware.py                  # everything: 224x224 (vit_b_16 --vit-res), batch 8 and 1
    python benchmarks/latency_aware.py --device cuda --no-mnist1d   # parts 1 and 2 on a GPU
    python benchmarks/latency_aware.py --models resnet50 --batches 1 --equal-models '' --no-mnist1d

Results are printed and written to ``benchmarks/results/latency_aware.md``. The latency table is
cached (``$SECATEURS_CACHE/latency``), so a second run skips building it.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import secateurs as sc  # noqa: E402
from secateurs.cli import check_device  # noqa: E402
from secateurs.measure import compare_latency, count_macs, latency_ratio  # noqa: E402
from secateurs.measure.staircase import LatencyTable, device_name  # noqa: E402
from secateurs.search.allocate import allocate  # noqa: E402
from secateurs.search.fastest import latency_sensitivity  # noqa: E402
from secateurs.search.sensitivity import sensitivity  # noqa: E402

SETTINGS = (("round_to=1", 1), ("round_to=16", 16), ("round_to=auto", "auto"))
TP = "torch-pruning"
LATENCY = {"warmup": 2, "runs": 10, "threads": 1}  # allocate's measurements of candidate models
# "As fast as the uniform model" counts as met up to 3% above it: the median per-round ratio of one model
# against itself moves by about that much between runs here (0.335-0.353 over five runs of 100 rounds).
TOLERANCE = 0.03
# Part 3: the allocation replaces the uniform model only when its score beats it by more than half a point: the
# score is accuracy on 1000 samples, whose standard error near 98% is about 0.45 points.
MIN_GAIN = 0.005
FASTEST = (1.0, 1.15, 1.3)  # latency-allocated models at these multiples of Torch-Pruning's MACs


def build(name: str, res: int, device: torch.device) -> nn.Module:
    """A randomly initialised torchvision model (seeded) for ``res`` x ``res`` inputs, on ``device``."""
    torch.manual_seed(0)
    kw = {"image_size": res} if name.startswith("vit") else {}
    return getattr(torchvision.models, name)(**kw).eval().to(device)


def tp_uniform(model: nn.Module, x: torch.Tensor, ratio: float) -> nn.Module:
    """Torch-Pruning's uniform channel pruning at ``ratio`` (L2 magnitude, MetaPruner) of a copy of ``model``."""
    import torch_pruning as tp
    from torchvision.models.vision_transformer import VisionTransformer

    m = copy.deepcopy(model)
    linears = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    ignored = [linears[-1]] if linears else []  # the classifier keeps its outputs
    extra = {}
    if isinstance(m, VisionTransformer):
        extra["num_heads"] = {mod: mod.num_heads for mod in m.modules() if isinstance(mod, nn.MultiheadAttention)}
        extra["unwrapped_parameters"] = [(m.class_token, 0), (m.encoder.pos_embedding, 0)]
    pruner = tp.pruner.MetaPruner(m, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
                                  ignored_layers=ignored, **extra)
    pruner.step()
    if isinstance(m, VisionTransformer):  # attributes Torch-Pruning leaves for the user to update
        m.hidden_dim = m.conv_proj.out_channels
        for mod in m.modules():
            if isinstance(mod, nn.MultiheadAttention):
                mod.head_dim = mod.embed_dim // mod.num_heads
    with torch.inference_mode():
        m(x)  # it must still run
    return m.eval()


def _ms(lat) -> str:
    return f"{lat.median_ms:.1f} ({lat.p10_ms:.1f}-{lat.p90_ms:.1f})"


def fastest_variants(model: nn.Module, x: torch.Tensor, graph, keep: float, ratios: tuple[float, ...],
                     round_to: int) -> tuple[dict[str, nn.Module], float]:
    """Models allocated by latency at ``FASTEST`` multiples of the MACs fraction ``keep``: each group's
    predicted milliseconds saved (``latency_sensitivity``, traced on one sample, the table at the batch
    of ``x``) against the MACs it removes, widths in multiples of ``round_to``; returns them and the
    seconds the sensitivity took."""
    started = time.perf_counter()
    xs = x[:1]
    sens = latency_sensitivity(model, xs, LatencyTable(len(x), threads=1, progress=False, device=x.device),
                               ratios=ratios, quiet=True, round_to=round_to)
    seconds = time.perf_counter() - started
    out = {}
    for mult in FASTEST:
        r = allocate(model, xs, sens, {"macs": min(1.0, keep * mult)})  # MACs scale with the batch: count on one
        p = sc.plan(model, x, 0.0, group_ratios=r, graph=graph, round_to=round_to)
        out[f"fastest@{mult:g}xTP"] = sc.apply(model, p).eval()
    return out, seconds


def ratio_rows(name: str, batch: int, res: int, ratio: float, rounds: int, fastest: tuple[float, ...],
               fastest_round_to: int, device: torch.device) -> tuple[list[str], list[str]]:
    """Part 1 for one model and batch size: the table's rows, and (with ``fastest`` sensitivity ratios)
    the equal-latency rows of the latency-allocated models against Torch-Pruning's."""
    model = build(name, res, device)
    x = torch.randn(batch, 3, res, res, device=device)
    graph = sc.trace(model, x)
    variants: dict[str, nn.Module] = {"dense": model}
    plan_s = {}
    for label, rt in SETTINGS:
        t = time.perf_counter()
        kw = {"latency_table": LatencyTable(batch, threads=1, device=device)} if rt == "auto" else {}
        p = sc.plan(model, x, ratio, round_to=rt, graph=graph, **kw)
        plan_s[label] = time.perf_counter() - t
        variants[label] = sc.apply(model, p).eval()
    try:
        t = time.perf_counter()
        variants[TP] = tp_uniform(model, x, ratio)
        plan_s[TP] = time.perf_counter() - t
    except Exception as exc:  # noqa: BLE001 - a benchmark row, not a library call: say why and go on
        print(f"  {name}: Torch-Pruning failed ({type(exc).__name__}: {str(exc)[:120]})", flush=True)
    macs = {k: count_macs(m, x[:1]).total for k, m in variants.items()}
    if fastest and TP in variants:
        found, seconds = fastest_variants(model, x, graph, macs[TP] / macs["dense"], fastest, fastest_round_to)
        variants.update(found)
        plan_s.update({k: seconds for k in found})
        macs.update({k: count_macs(m, x[:1]).total for k, m in found.items()})
    ms = compare_latency(variants, x, rounds=rounds, warmup=2, threads=1)
    rows, equal = [], []
    for label in variants:
        if label == "dense":
            continue
        speed = ms["dense"].median_ms / ms[label].median_ms
        cut = macs["dense"] / macs[label]
        rows.append(f"| {name} | {batch} | {label} | {_ms(ms[label])} | {ms['dense'].median_ms:.1f} | {speed:.2f}x | "
                    f"{cut:.2f}x | {speed / cut:.2f} | {plan_s[label]:.1f} |")
        if label.startswith("fastest@"):
            t = ms[TP]
            same = "yes" if t.p10_ms <= ms[label].median_ms <= t.p90_ms else ("faster" if ms[label].median_ms < t.p10_ms
                                                                             else "no")
            equal.append(f"| {name} | {batch} | {label} | {_ms(t)} | {macs[TP] / 1e6:.0f}M | {_ms(ms[label])} | "
                         f"{macs[label] / 1e6:.0f}M | {macs[label] / macs[TP] - 1:+.1%} | {same} |")
    return rows, equal


def equal_latency_row(name: str, batch: int, res: int, ratio: float, rounds: int, sens_res: int,
                      device: torch.device) -> str:
    """Part 2 for one model: allocated to the uniform model's latency; MACs kept against it."""
    model = build(name, res, device)
    x = torch.randn(batch, 3, res, res, device=device)
    graph = sc.trace(model, x)
    try:
        uniform, source = tp_uniform(model, x, ratio), TP
    except Exception as exc:  # noqa: BLE001
        print(f"  {name}: Torch-Pruning failed ({type(exc).__name__}: {str(exc)[:120]}); "
              f"using secateurs' uniform {ratio:g}", flush=True)
        uniform, source = sc.apply(model, sc.plan(model, x, ratio, graph=graph)).eval(), "secateurs uniform"
    started = time.perf_counter()
    # capacity as the quality: the fraction of the dense MACs kept, measured on a small input (proportional)
    xs = x[:1] if name.startswith("vit") else torch.randn(1, 3, sens_res, sens_res, device=device)
    dense_small = count_macs(model, xs).total
    sens = sensitivity(model, xs, lambda m: count_macs(m, xs).total / dense_small, ratios=(0.5, 0.9), quiet=True)
    # as fast as the uniform model: every candidate timed back to back with it (load cancels in the ratio)
    ratios = allocate(model, x, sens, {"latency": 1.0}, graph=graph, latency_kwargs=LATENCY,
                      latency_table=LatencyTable(batch, threads=1, device=device), latency_reference=uniform,
                      latency_tolerance=TOLERANCE)
    allocated = sc.apply(model, sc.plan(model, x, 0.0, group_ratios=ratios, graph=graph)).eval()
    seconds = time.perf_counter() - started
    ms = compare_latency({"uniform": uniform, "allocated": allocated}, x, rounds=rounds, warmup=2, threads=1)
    r = latency_ratio(allocated, uniform, x, rounds=rounds, warmup=2, threads=1)
    mu, ma = count_macs(uniform, x).total, count_macs(allocated, x).total
    u, a = ms["uniform"], ms["allocated"]
    equal = "yes" if a.median_ms <= u.p90_ms else "no"
    return (f"| {name} | {batch} | {source} | {_ms(u)} | {mu / 1e6:.0f}M | {_ms(a)} | {ma / 1e6:.0f}M | "
            f"{ma / mu - 1:+.1%} | {_ratio(r)} | {equal} | {seconds:.0f} |")


def _ratio(r) -> str:
    return f"{r.median:.2f} ({r.p10:.2f}-{r.p90:.2f})"


def mnist1d_rows(rounds: int, steps: int, ratio: float, seed: int = 0,
                 short: int = 60) -> tuple[list[str], dict[str, float]]:
    """Part 3: uniform, allocated to its latency, and round_to="auto", fine-tuned alike; test accuracy.

    The sensitivity scores each pruned model after ``short`` fine-tuning steps, as NetAdapt does: un-tuned
    accuracy after a 50% cut is 20-60% and says little about what fine-tuning recovers. The allocation
    and the uniform ratio it is compared with are scored after the full ``steps``, on the same held-out samples.
    """
    from secateurs.examples import data as D
    from secateurs.examples import models as M
    from secateurs.examples import train as T
    from secateurs.train import recover

    x_train, y_train, x_test, y_test = D.mnist1d(seed=seed)
    model = T.fit_cached("mnist1d_cnn", M.mnist1d_cnn(seed=seed), x_train, y_train, epochs=40, lr=3e-3,
                         seed=seed, progress=False).eval()
    xb = x_test[:256]  # the demo's latency batch
    graph = sc.trace(model, xb)
    batches = T.batches(x_train, y_train, batch_size=128, n=len(x_train) // 128, seed=seed)
    table = LatencyTable(len(xb), threads=1)
    uniform = sc.apply(model, sc.plan(model, xb, ratio, graph=graph)).eval()
    # scored on 1000 training samples held out of the short fine-tuning, never on the test set
    x_val, y_val = x_train[:1000], y_train[:1000]
    tune = T.batches(x_train[1000:], y_train[1000:], batch_size=128, n=(len(x_train) - 1000) // 128, seed=seed)

    def tuned_accuracy(m: nn.Module, n: int = short) -> float:
        return T.accuracy(recover(m, tune, steps=n, lr=3e-3, teacher=model, quiet=True, seed=seed).eval(),
                          x_val, y_val)

    sens = sensitivity(model, xb, tuned_accuracy, quiet=True)
    # as fast as the uniform model (timed back to back with it); evaluate: the allocation is compared with
    # the uniform ratio meeting the same target after the full fine-tune (the short one ranked a seed's
    # allocation above uniform that ended below it), and kept only when it scores MIN_GAIN better
    ratios = allocate(model, xb, sens, {"latency": 1.0}, graph=graph, latency_table=table, latency_reference=uniform,
                      latency_tolerance=TOLERANCE, latency_kwargs={"warmup": 5, "runs": rounds, "threads": 1},
                      evaluate=lambda m: tuned_accuracy(m, steps), min_gain=MIN_GAIN)
    variants = {
        f"uniform {ratio:g}": uniform,
        "allocated (same latency)": sc.apply(model, sc.plan(model, xb, 0.0, group_ratios=ratios, graph=graph)),
        f"round_to=auto {ratio:g}": sc.apply(model, sc.plan(model, xb, ratio, round_to="auto", graph=graph,
                                                          latency_table=table)),
    }
    tuned = {k: recover(copy.deepcopy(m), batches, steps=steps, lr=3e-3, teacher=model, quiet=True, seed=seed).eval()
             for k, m in variants.items()}
    ms = compare_latency({"dense": model, **tuned}, xb, rounds=rounds, warmup=5, threads=1)
    rows = [f"| {seed} | dense | {T.accuracy(model, x_test, y_test):.2%} | {_ms(ms['dense'])} | "
            f"{count_macs(model, xb).total / 1e6:.1f}M | | |"]
    accuracy = {}
    base = f"uniform {ratio:g}"
    for k, m in tuned.items():
        accuracy[k] = T.accuracy(m, x_test, y_test)
        vs = "" if k == base else _ratio(latency_ratio(m, tuned[base], xb, rounds=rounds, warmup=5, threads=1))
        rows.append(f"| {seed} | {k} | {accuracy[k]:.2%} | {_ms(ms[k])} | {count_macs(m, xb).total / 1e6:.1f}M | "
                    f"{vs} | {'yes' if ms[k].median_ms <= ms[base].p90_ms else 'no'} |")
    return rows, accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_b0,resnet50", help="part 1 models ('' skips)")
    ap.add_argument("--batches", default="8,1")
    ap.add_argument("--equal-models", default="mobilenet_v2,efficientnet_b0,resnet50,vit_b_16",
                    help="part 2 models ('' skips)")
    ap.add_argument("--equal-batch", type=int, default=1)
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--vit-res", type=int, default=112, help="input size of vit_b_16 (224: ~4x the time)")
    ap.add_argument("--sens-res", type=int, default=64, help="input size of part 2's MACs sensitivity (CNNs)")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=300, help="part 3 fine-tuning steps")
    ap.add_argument("--no-mnist1d", action="store_true")
    ap.add_argument("--seeds", default="0,1,2", help="part 3: one trained CNN per seed")
    ap.add_argument("--fastest-round-to", type=int, default=8,
                    help="part 1: widths of the fastest@ rows in multiples of this")
    ap.add_argument("--fastest-ratios", default="0.5,0.9",
                    help="part 1: latency-allocated rows from a latency sensitivity at these ratios ('' skips)")
    ap.add_argument("--device", default="cpu",
                    help="parts 1 and 2 (models, inputs, latency tables) on this device, e.g. cuda; part 3 on the CPU")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "latency_aware.md"))
    args = ap.parse_args()
    try:
        device = check_device(args.device, hint="use --device cpu")
    except ValueError as exc:
        ap.error(str(exc))
    torch.set_num_threads(1)
    started = time.perf_counter()
    out = ["# Latency-aware widths (benchmarks/latency_aware.py)", ""]

    def emit(line: str) -> None:  # printed and written at once: a long run keeps what it has measured
        print(line, flush=True)
        out.append(line)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(out) + "\n")

    models = [m for m in args.models.split(",") if m]
    if models:
        emit(f"## Ratio {args.ratio:g}: speed-up against MACs cut ({args.res}x{args.res})")
        emit("")
        emit("| model | batch | setting | ms (p10-p90) | dense ms | speed-up | MACs cut | speed-up / MACs cut "
             "| plan s |")
        emit("|---|---|---|---|---|---|---|---|---|")
        fastest = tuple(float(v) for v in args.fastest_ratios.split(",") if v)
        equal_rows = []
        for b in [int(v) for v in args.batches.split(",")]:
            for name in models:
                res = args.vit_res if name.startswith("vit") else args.res
                rows, eq = ratio_rows(name, b, res, args.ratio, args.rounds, fastest, args.fastest_round_to, device)
                equal_rows += eq
                for row in rows:
                    emit(row)
        emit("")
        if equal_rows:
            emit("Latency-allocated models against Torch-Pruning's, same interleaved timing (MACs per sample; "
                 "'yes': median within Torch-Pruning's p10-p90)")
            emit("")
            emit("| model | batch | allocated | torch-pruning ms (p10-p90) | TP MACs | allocated ms (p10-p90) | "
                 "allocated MACs | MACs vs TP | equal latency |")
            emit("|---|---|---|---|---|---|---|---|---|")
            for row in equal_rows:
                emit(row)
            emit("")
    equal = [m for m in args.equal_models.split(",") if m]
    if equal:
        emit(f"## Equal latency: allocated to the uniform {args.ratio:g} model's latency "
             f"(batch {args.equal_batch}, {args.res}x{args.res}; vit_b_16 {args.vit_res}x{args.vit_res})")
        emit("")
        emit("| model | batch | uniform model | uniform ms (p10-p90) | uniform MACs | allocated ms (p10-p90) "
             "| allocated MACs | MACs vs uniform | allocated / uniform per round (p10-p90) | equal latency "
             "| allocate s |")
        emit("|---|---|---|---|---|---|---|---|---|---|---|")
        for name in equal:
            try:
                res = args.vit_res if name.startswith("vit") else args.res
                emit(equal_latency_row(name, args.equal_batch, res, args.ratio, args.rounds, args.sens_res, device))
            except ValueError as exc:  # a target allocate cannot reach: a row that says so, and the run goes on
                emit(f"| {name} | {args.equal_batch} | failed: {' '.join(str(exc).split())[:200]} |")
        emit("")
    if not args.no_mnist1d:
        emit(f"## MNIST-1D CNN: accuracy at equal latency (batch 256, {args.steps} fine-tuning steps each)")
        emit("")
        emit("| seed | model | test accuracy | ms (p10-p90) | MACs | / uniform per round (p10-p90) "
             "| latency <= uniform's p90 |")
        emit("|---|---|---|---|---|---|---|")
        per_seed = []
        for seed in [int(v) for v in args.seeds.split(",")]:
            rows, accuracy = mnist1d_rows(max(args.rounds, 100), args.steps, args.ratio, seed)  # ~4 ms a forward
            per_seed.append(accuracy)
            for row in rows:
                emit(row)
        emit("")
        emit("Mean test accuracy over the seeds: " + ", ".join(
            f"{k} {sum(a[k] for a in per_seed) / len(per_seed):.2%}" for k in per_seed[0]))
        emit("")
    emit(f"parts 1-2 on {device_name(device)}, torch {torch.__version__}, torch-pruning "
         f"{version('torch-pruning')}, 1 thread, ratio {args.ratio}, {args.rounds} interleaved rounds; "
         f"total {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()

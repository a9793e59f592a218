"""A synthetic but realistic report: ResNet-18 pruned six ways, on one CPU thread.

``python -m tests.report.sample docs/report.png`` writes the sample report and saves a screenshot of it
rendered by headless Chromium (the picture in the README).
"""
from __future__ import annotations

import copy
import sys
import tempfile
from pathlib import Path

from secateurs.search.candidate import Candidate


def _measurement(params: int, macs: int, median: float, spread: float = 0.03, latency: bool = True) -> dict:
    return {
        "params": params,
        "macs": macs,
        "macs_by_kind": {"conv": macs - 520_000 - macs // 700, "linear": 512_000, "norm": macs // 700},
        "size_bytes": params * 4 + 96_000,
        "latency": {
            "median_ms": median,
            "p10_ms": round(median * (1 - spread), 2),
            "p90_ms": round(median * (1 + 2 * spread), 2),
            "runs": 20,
            "batch_size": 1,
            "threads": 1,
        } if latency else None,
        "nonzero_params": params,
        "dense_bytes": params * 4,
        "compressed_bytes": None,
    }


def _method(criterion: str, ratio: float, finetune_epochs: int = 2) -> dict:
    return {"criterion": criterion, "ratio": ratio, "round_to": 8, "finetune_epochs": finetune_epochs}


# (name, method, quality, params, MACs, latency ms)
_ROWS = [
    ("l2-0.2", _method("l2", 0.2), 0.6951, 7_480_000, 1_170_000_000, 33.9),
    ("l2-0.3", _method("l2", 0.3), 0.6912, 5_740_000, 905_000_000, 27.2),
    ("l2-0.5", _method("l2", 0.5), 0.6731, 2_950_000, 462_000_000, 15.8),
    ("taylor-0.3", _method("taylor", 0.3), 0.6938, 5_810_000, 921_000_000, 27.9),
    ("taylor-0.5", _method("taylor", 0.5), 0.6802, 3_020_000, 470_000_000, 16.4),
    ("fpgm-0.5", _method("fpgm", 0.5, finetune_epochs=0), 0.6544, 2_990_000, 468_000_000, 16.1),
]

_GROUPS = ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1"]
_FRAGILITY = [0.30, 0.18, 0.22, 0.10, 0.15, 0.06, 0.08, 0.03]

_LAYERS = [("conv1", 64)] + [
    (f"layer{i}.{j}.conv1", w) for i, w in zip(range(1, 5), (64, 128, 256, 512)) for j in (0, 1)
] + [("layer2.0.downsample.0", 128), ("layer3.0.downsample.0", 256), ("layer4.0.downsample.0", 512)]


def sample_data(n_candidates: int = 6) -> dict:
    """The report data: baseline, ``n_candidates`` candidates (at most 6), picked taylor-0.3."""
    baseline = Candidate("baseline", {}, 0.6976,
                         _measurement(11_689_512, 1_824_033_792, 50.6))
    cands = [Candidate(n, m, q, _measurement(p, mac, lat), plan_path=f"plans/{n}.json",
                       weights_path=f"weights/{n}.safetensors", seconds=120.0 + 10 * i)
             for i, (n, m, q, p, mac, lat) in enumerate(_ROWS[:n_candidates])]
    sensitivity = {
        g: {f"{r:.1f}": round(0.6976 - f * r**2 * 0.5, 4) for r in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)}
        for g, f in zip(_GROUPS, _FRAGILITY)
    }
    widths = [{"layer": name, "before": w, "after": w if name == "conv1" else int(w * 0.7) // 8 * 8}
              for name, w in _LAYERS]
    return copy.deepcopy({
        "title": "Synthetic sweep (test fixture, not a measurement)",
        "quality_name": "accuracy",
        "baseline": baseline.to_dict(),
        "candidates": [c.to_dict() for c in cands],
        "picked": "taylor-0.3",
        "constraint": "max_drop=0.005, minimize=latency",
        "sensitivity": sensitivity,
        "widths": widths,
        "machine": {"cpu": "AMD EPYC 7B13 (x86_64)", "threads": 1, "batch_size": 1, "os": "Linux 6.1"},
        "versions": {"python": "3.11.2", "torch": "2.14.1", "torchvision": "0.29.1", "secateurs": "0.1.0"},
    })


def main(argv: list[str]) -> None:
    from secateurs.report import write_report
    from tests.report.chromium import find_chromium, screenshot

    out = Path(argv[0] if argv else "docs/report.png")
    browser = find_chromium()
    if browser is None:
        raise SystemExit("no chromium binary found")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_report(sample_data(), Path(tmp) / "report.html")
        # The top of the page: title, the pick, the three trade-off plots and the candidate table.
        screenshot(browser, paths["html"], out, width=1280, height=1760, max_bytes=300_000)
    print(f"{out}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])

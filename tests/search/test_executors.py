"""Executors: a sweep through a local 2-CPU Ray instance equals the local one; workers that die are retried."""
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

import secateurs as sc
from secateurs.examples import models
from secateurs.search.executors import INSTALL, Job, LocalExecutor, RayExecutor, get_executor, reachable
from secateurs.train import recover

ROOT = str(Path(sc.__file__).resolve().parents[1])
G = torch.Generator().manual_seed(0)
X = torch.randn(64, 1, 40, generator=G)
Y = torch.randint(0, 10, (64,), generator=G)
TRAIN = [(X[i:i + 16], Y[i:i + 16]) for i in range(0, 64, 16)]
SWEEP = dict(methods=["channel/l2/local", "channel/lamp/global"], ratios=[0.5], targets=[{"macs": 0.5}],
             budget=4, runs=3, quiet=True)


def mnist1d_model():
    return models.mnist1d_cnn(channels=8, seed=0).eval()


def accuracy(m):
    with torch.no_grad():
        return float((m.eval()(X).argmax(1) == Y).float().mean())


def finetune(m, steps):
    return recover(m, TRAIN, steps=steps, lr=3e-3, seed=0)


def _square(shared, v):
    return shared * v * v


def _fail(shared, v):
    raise ValueError(f"job {v} is broken")


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = ROOT + (os.pathsep + before if before else "")  # workers import this checkout
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    if before is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = before


def _records(workdir):
    return [json.loads(line) for line in (Path(workdir) / "results.jsonl").read_text().splitlines()]


def test_local_executor_runs_in_order():
    jobs = [Job(str(v), (v,)) for v in (1, 2, 3)]
    assert [(j.key, r) for j, r in LocalExecutor().run(_square, 10, jobs)] == [("1", 10), ("2", 40), ("3", 90)]


def test_ray_sweep_equals_local_sweep(tmp_path, ray_session, one_thread):
    local = sc.explore(mnist1d_model(), X, accuracy, finetune=finetune, workdir=tmp_path / "local", **SWEEP)
    distributed = sc.explore(mnist1d_model(), X, accuracy, finetune=finetune, workdir=tmp_path / "ray",
                             executor=RayExecutor(max_retries=1), **SWEEP)
    names = [c.name for c in local.candidates]
    assert names == [c.name for c in distributed.candidates] and len(names) == 4
    assert [c.quality for c in local.candidates] == [c.quality for c in distributed.candidates]
    for a, b in zip(local.candidates, distributed.candidates):
        assert {k: v for k, v in a.measurement.items() if k != "latency"} == \
               {k: v for k, v in b.measurement.items() if k != "latency"}
        if a.plan_path:
            assert (tmp_path / "local" / a.plan_path).read_text() == (tmp_path / "ray" / b.plan_path).read_text()
        if a.weights_path:
            wa, _ = local.rebuild(a)
            wb, _ = distributed.rebuild(b)
            for (ka, va), (kb, vb) in zip(wa.state_dict().items(), wb.state_dict().items()):
                assert ka == kb and torch.equal(va, vb)
    # one sensitivity job per group, same curves
    assert json.loads((tmp_path / "local" / "sensitivity.json").read_text()) == \
           json.loads((tmp_path / "ray" / "sensitivity.json").read_text())
    # latencies: measured in-task locally, re-measured interleaved on the driver after the Ray sweep
    assert not any("latency_note" in c.extra for c in local.candidates)
    records = _records(tmp_path / "ray")
    assert sorted(r["name"] for r in records) == sorted(names)  # each recorded once
    for r in records:
        assert r["measurement"]["latency"]["runs"] == 3 and "interleaved" in r["extra"]["latency_note"]
    assert "interleaved" in distributed.table()
    assert "interleaved" in distributed.report_data()["machine"]["latency"]
    assert distributed.pick(max_drop=1.0, minimize="latency").model(X).shape == (64, 10)


def test_ray_sweep_recalibrates_one_shot_candidates_like_local(tmp_path, ray_session, one_thread):
    kw = dict(methods=["channel/l2/local"], ratios=[0.5], runs=3, quiet=True, calibration=[X[:32], X[32:]])
    local = sc.explore(mnist1d_model(), X, accuracy, workdir=tmp_path / "local", **kw)
    distributed = sc.explore(mnist1d_model(), X, accuracy, workdir=tmp_path / "ray",
                             executor=RayExecutor(max_retries=1), **kw)
    assert [c.quality for c in local.candidates] == [c.quality for c in distributed.candidates]
    assert [c.extra.get("bn_recalibrated") for c in distributed.candidates] == [None, 2]
    (a, _), (b, _) = local.rebuild(local.candidates[1]), distributed.rebuild(distributed.candidates[1])
    assert torch.equal(a.bn1.running_mean, b.bn1.running_mean)  # re-estimated in the worker, saved by the driver
    assert not torch.equal(b.bn1.running_mean, mnist1d_model().bn1.running_mean[:len(b.bn1.running_mean)])


def test_killed_worker_is_retried_and_recorded_once(tmp_path, ray_session):
    marker = tmp_path / "killed-once"

    def dying_finetune(m, steps):
        try:  # the first candidate to get here kills its worker mid-candidate; its retry goes on
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return finetune(m, steps)
        os._exit(1)

    kw = dict(SWEEP, targets=[], ratios=[0.5])
    front = sc.explore(mnist1d_model(), X, accuracy, finetune=dying_finetune, workdir=tmp_path / "w",
                       executor="ray", **kw)  # the running instance, default max_retries=3
    assert marker.exists()
    names = [r["name"] for r in _records(tmp_path / "w")]
    assert sorted(names) == sorted(c.name for c in front.candidates) and len(names) == len(set(names)) == 3
    reference = sc.explore(mnist1d_model(), X, accuracy, finetune=finetune, **kw)
    assert [c.quality for c in front.candidates] == [c.quality for c in reference.candidates]


def test_ray_job_error_is_raised_as_itself(ray_session):
    ex = RayExecutor()
    assert sorted(r for _, r in ex.run(_square, 2, [Job(str(v), (v,)) for v in (1, 2, 3)])) == [2, 8, 18]
    with pytest.raises(ValueError, match="job 7 is broken"):
        list(ex.run(_fail, None, [Job("seven", (7,))]))


def test_unreachable_address_fails_fast():
    with socket.socket() as srv:  # a host that never answers: a listener whose one-slot backlog is full
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            started = time.perf_counter()
            with pytest.raises(ConnectionError, match=f"no Ray cluster reachable at '127.0.0.1:{port}' within 1 s"):
                RayExecutor(f"127.0.0.1:{port}", connect_timeout=1.0).connect()
            assert time.perf_counter() - started < 5
    with pytest.raises(ConnectionError, match="ConnectionRefusedError"):
        reachable(f"ray://127.0.0.1:{port}", 1.0)  # nothing listens there any more
    with pytest.raises(ValueError, match="ray_address must be"):
        reachable("headnode", 1.0)


def test_ray_not_installed_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "secateurs\[ray\]"'):
        sc.explore(mnist1d_model(), X, accuracy, executor="ray", **dict(SWEEP, targets=[]))
    assert INSTALL == 'pip install "secateurs[ray]"'


def test_bad_executor_arguments():
    with pytest.raises(ValueError, match="executor must be 'local', 'ray'"):
        get_executor("spark")
    with pytest.raises(TypeError, match="executor must be"):
        get_executor(3)
    with pytest.raises(ValueError, match="needs executor='ray'"):
        get_executor("local", ray_address="1.2.3.4:6379")
    with pytest.raises(ValueError, match="max_retries must be"):
        RayExecutor(max_retries=-1)
    with pytest.raises(ValueError, match="num_cpus must be"):
        RayExecutor(num_cpus="two")
    assert isinstance(get_executor(None), LocalExecutor)

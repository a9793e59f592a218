"""Where sweep work runs: in this process, one job after another (``LocalExecutor``), or as Ray tasks.

An executor takes a picklable top-level function ``fn``, one ``shared`` object (the dense model, the
example inputs, the metric...) and a list of ``Job``s, calls ``fn(shared, *job.args)`` for each job,
and yields ``(job, result)`` pairs as they finish. It never writes anything: the caller (the driver)
records each result as it arrives, so a sweep's workdir has exactly one writer however many
workers compute. ``RayExecutor`` ships ``shared`` to the object store once, runs each job as a Ray
task with its own ``num_cpus``/``num_gpus`` request, and lets Ray rerun a task whose worker died
(``max_retries``); the driver sees each job's result once.

``LocalExecutor`` is the default and needs nothing beyond torch; Ray is the optional extra
``pip install "secateurs[ray]"``.
"""
from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .._inputs import check_int, check_real

INSTALL = 'pip install "secateurs[ray]"'


@dataclass(frozen=True)
class Job:
    """One unit of work: ``fn(shared, *args)``; ``key`` names it; ``num_cpus``/``num_gpus`` override the executor's."""

    key: str
    args: tuple
    num_cpus: float | None = None
    num_gpus: float | None = None


@runtime_checkable
class Executor(Protocol):
    """Runs jobs and streams back their results; ``concurrent`` says whether jobs overlap in time."""

    concurrent: bool

    def run(self, fn: Callable[..., Any], shared: Any, jobs: Sequence[Job]) -> Iterator[tuple[Job, Any]]:
        """Call ``fn(shared, *job.args)`` for every job; yield ``(job, result)`` as each finishes."""
        ...


class LocalExecutor:
    """Today's behaviour: every job in this process, one after another, in the order given."""

    concurrent = False

    def run(self, fn: Callable[..., Any], shared: Any, jobs: Sequence[Job]) -> Iterator[tuple[Job, Any]]:
        """Call ``fn(shared, *job.args)`` for each job in turn and yield ``(job, result)``."""
        for job in jobs:
            yield job, fn(shared, *job.args)

    def __repr__(self) -> str:
        return "LocalExecutor()"


class RayExecutor:
    """Each job is a Ray task requesting ``num_cpus``/``num_gpus``; a task whose worker dies is rerun.

    ``address`` is a running cluster's ("host:port", "ray://host:port" or "auto"); None starts a
    local Ray instance (``init_kwargs`` go to ``ray.init``) unless one is already running in this
    process, which is then used as it is. Before connecting to a "host:port" address the executor
    opens a TCP connection with ``connect_timeout`` seconds to give up, so a wrong address fails in
    seconds with a ``ConnectionError`` instead of Ray's long reconnect loop. ``max_retries`` is
    Ray's count of reruns after a worker process dies mid-task (an exception raised by the job
    itself is not retried: it is raised in the driver, as the local executor would).
    """

    concurrent = True

    def __init__(self, address: str | None = None, *, num_cpus: float = 1, num_gpus: float = 0,
                 max_retries: int = 3, connect_timeout: float = 10.0, init_kwargs: dict[str, Any] | None = None):
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(f"RayExecutor: address must be 'host:port', 'ray://host:port', 'auto' or None, "
                             f"got {address!r}")
        for name, value, interval in (("num_cpus", num_cpus, "[0, inf)"), ("num_gpus", num_gpus, "[0, inf)"),
                                      ("connect_timeout", connect_timeout, "(0, inf)")):
            check_real(value, f"RayExecutor: {name}", interval)
        max_retries = check_int(max_retries, "RayExecutor: max_retries", minimum=0)
        self.address = address
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.max_retries = max_retries
        self.connect_timeout = float(connect_timeout)
        self.init_kwargs = dict(init_kwargs or {})

    def __repr__(self) -> str:
        return (f"RayExecutor(address={self.address!r}, num_cpus={self.num_cpus}, num_gpus={self.num_gpus}, "
                f"max_retries={self.max_retries})")

    def connect(self):
        """The ``ray`` module, initialised (connected to ``address`` or a local instance); raises clear errors."""
        ray = import_ray()
        if self.address not in (None, "auto", "local"):
            reachable(self.address, self.connect_timeout)
        if ray.is_initialized():
            return ray
        try:
            ray.init(address=self.address, **self.init_kwargs)
        except ConnectionError as exc:
            raise ConnectionError(f"RayExecutor: cannot connect to the Ray cluster at {self.address!r}: {exc}") from exc
        return ray

    def run(self, fn: Callable[..., Any], shared: Any, jobs: Sequence[Job]) -> Iterator[tuple[Job, Any]]:
        """Submit every job at once, then yield ``(job, result)`` in the order they finish."""
        if not jobs:
            return
        ray = self.connect()
        remote = ray.remote(fn)
        shared_ref = ray.put(shared)  # shipped once; Ray hands every task the object, not the reference
        pending = {}
        for job in jobs:
            options = {"num_cpus": self.num_cpus if job.num_cpus is None else job.num_cpus,
                       "num_gpus": self.num_gpus if job.num_gpus is None else job.num_gpus,
                       "max_retries": self.max_retries, "retry_exceptions": False}
            pending[remote.options(**options).remote(shared_ref, *job.args)] = job
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job = pending.pop(ref)
                    yield job, self._get(ray, ref, job)
        finally:
            for ref in pending:  # the caller stopped early (an error, a closed generator): free the cluster
                ray.cancel(ref, force=True)

    def _get(self, ray, ref, job: Job) -> Any:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the job raised: re-raise the job's own exception
            raise exc.as_instanceof_cause() from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.OutOfMemoryError) as exc:
            raise RuntimeError(f"RayExecutor: job {job.key!r} lost its worker {self.max_retries + 1} time(s) "
                               f"(max_retries={self.max_retries}): {type(exc).__name__}: {exc}") from exc


def import_ray():
    """The ``ray`` module, or an ImportError that gives the install command."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"executor='ray' needs Ray, which is not installed here ({exc}); install it with: "
                          f"{INSTALL}") from None
    return ray


def reachable(address: str, timeout: float) -> None:
    """Raise ConnectionError unless a TCP connection to ``address`` ("[ray://]host:port") opens within ``timeout`` s."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"ray_address must be 'host:port', 'ray://host:port' or 'auto', got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConnectionError(f"RayExecutor: no Ray cluster reachable at {address!r} within {timeout:g} s "
                              f"({type(exc).__name__}: {exc}); start one with `ray start --head` or fix the "
                              "address") from None


def get_executor(executor: str | Executor | None = "local", ray_address: str | None = None) -> Executor:
    """``"local"`` (or None), ``"ray"`` (at ``ray_address``, None: a local instance) or an ``Executor`` object."""
    if executor is None or executor == "local":
        if ray_address is not None:
            raise ValueError(f"ray_address={ray_address!r} needs executor='ray', got executor={executor!r}")
        return LocalExecutor()
    if executor == "ray":
        import_ray()
        ex = RayExecutor(ray_address)
        if ray_address not in (None, "auto", "local"):
            reachable(ray_address, ex.connect_timeout)  # fail now, before any model is built
        return ex
    if isinstance(executor, str):
        raise ValueError(f"executor must be 'local', 'ray' or an Executor object, got {executor!r}")
    if not isinstance(executor, Executor):
        raise TypeError(f"executor must be 'local', 'ray' or an object with run(fn, shared, jobs) and a "
                        f"'concurrent' flag, got {type(executor).__name__}")
    if ray_address is not None:
        raise ValueError("ray_address applies to executor='ray' only; give a RayExecutor its address instead")
    return executor

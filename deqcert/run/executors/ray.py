"""The Ray executor: inputs scheduled dynamically over Ray workers (``pip install 'deqcert[ray]'``).

Each worker (a Ray actor) builds its own copy of the pipeline from the
effective config, once, and certifies whichever index it is handed next; the
records stream back to the single writer in the driver in completion order.
Because each input's noise is seeded from ``(seed, index)``, the records equal
the local executor's, and a killed run resumes like any other.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ... import _interrupts
from ...errors import OptionError
from ...options import ComponentOptions, Configurable, short_repr

if TYPE_CHECKING:
    from ..pipeline import CertifyPipeline

INSTALL_HINT = "ray: the ray package is not installed; pip install 'deqcert[ray]'"


class RayOptions(ComponentOptions):
    """Options of :class:`RayExecutor`."""

    address: str | None = Field(
        None, description="cluster to join ('auto', 'ray://host:10001'); default: start one here"
    )
    num_workers: int | None = Field(None, ge=1, description="default: as many as resources allow")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a cluster started here")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs requested per worker")
    gpus_per_worker: float | None = Field(
        None, ge=0, description="GPUs requested per worker; default 1 on a CUDA device, else 0"
    )
    connect_timeout: float = Field(
        10.0, gt=0, le=600, description="seconds to wait for the cluster at 'address'"
    )


class _Worker:
    """One pipeline copy in a Ray actor; certifies one index per call."""

    def __init__(self, config: dict[str, Any], cwd: str, threads: int) -> None:
        import torch

        from ..config import CertifyConfig

        torch.set_num_threads(max(1, threads))
        if os.path.isdir(cwd):  # relative paths in the config mean the driver's folder
            os.chdir(cwd)
        device = str(config.get("device", "cpu")).split(":")[0]  # Ray picks the GPU
        local = {**config, "executor": {"name": "local"}, "shard": None, "device": device}
        self.pipeline = CertifyConfig.model_validate(local).build(validate_inputs=False)

    def certify(self, index: int) -> dict[str, Any]:
        return next(iter(self.pipeline.records([index])))


class RayExecutor(Configurable):
    """Schedules indices over Ray actors (one model copy each) and yields their records."""

    Options = RayOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if importlib.util.find_spec("ray") is None:
            raise OptionError(INSTALL_HINT)
        if self.options.address is not None:  # before any file is written
            probe(self.options.address, self.options.connect_timeout)
        self._started = False

    def start(self) -> None:
        """Start or join the cluster now (before the results file is written); one line if not."""
        import ray

        if self._started or ray.is_initialized():
            return
        options = self.options
        _interrupts.enter()  # from here a signal shuts the cluster down (run's finally)
        try:
            ray.init(
                address=options.address,
                num_cpus=options.num_cpus if options.address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            _interrupts.leave()
            raise OptionError(
                f"ray: cannot start or join a cluster at {options.address or 'this machine'}: "
                f"{_first_line(exc)}"
            ) from None
        self._started = True

    def run(self, pipeline: CertifyPipeline, indices: Sequence[int]) -> Iterator[dict[str, Any]]:
        """Yield one record per index, in completion order."""
        import ray
        from ray.util import ActorPool

        if not indices:
            return
        options = self.options
        self.start()
        try:
            gpus = options.gpus_per_worker
            if gpus is None:
                gpus = 1.0 if pipeline.device.type == "cuda" else 0.0
            cpus = options.cpus_per_worker
            resources = ray.available_resources()
            fit = resources.get("GPU", 0.0) / gpus if gpus else resources.get("CPU", 1.0) / cpus
            count = min(options.num_workers or max(1, int(fit)), len(indices))
            actor = ray.remote(num_cpus=cpus, num_gpus=gpus)(_Worker)
            config = pipeline.config.model_dump(mode="json")
            workers = [actor.remote(config, os.getcwd(), int(cpus)) for _ in range(count)]
            pool = ActorPool(workers)
            yield from pool.map_unordered(
                lambda worker, index: worker.certify.remote(index), list(indices)
            )
        finally:
            if self._started:
                self._started = False
                ray.shutdown()
                _interrupts.leave()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return short_repr(text.splitlines()[0], 200).strip("'\"") if text else type(exc).__name__


def _host_port(address: str) -> tuple[str, int] | None:
    """``ray://host:10001`` or ``host:6379`` -> ``(host, port)``; None for ``auto``/``local``."""
    rest = address.removeprefix("ray://")
    if rest in ("auto", "local") or "://" in rest:
        return None
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise OptionError(
            f"ray: address {short_repr(address, 60)} is not host:port, ray://host:port or auto"
        )
    return host.strip("[]"), int(port)


def probe(address: str, timeout: float) -> None:
    """Refuse (one line) a cluster address that nothing answers at within ``timeout`` seconds.

    Ray itself retries a wrong address for minutes; a TCP connection to the
    head's port tells at once (it does not prove that a Ray head listens).
    """
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise OptionError(
            f"ray: no cluster answers at {short_repr(address, 60)} ({reason} after at most "
            f"{timeout:g} s); check --address or the cluster, or set executor.connect_timeout"
        ) from None

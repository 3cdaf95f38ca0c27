"""Entry-point registries for solvers, certifiers, noise, models and datasets.

Every component, built-in or third-party, is found through the Python entry
point groups below (deqcert registers its own built-ins in its
``pyproject.toml`` exactly as a plugin would).  Targets are imported lazily;
one that fails to import is recorded with its error and never breaks the
others.  Components can also be registered at run time with
:meth:`Registry.register`; a name that is already taken is refused unless
``override=True``.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .errors import PluginLoadError, RegistrationError, UnknownNameError

GROUPS: dict[str, str] = {
    "solver": "deqcert.solvers",
    "certifier": "deqcert.certifiers",
    "noise": "deqcert.noise",
    "model": "deqcert.models",
    "dataset": "deqcert.datasets",
}


@dataclass
class Entry:
    """One registered component: where it comes from and whether it loads."""

    name: str
    group: str
    target: str
    origin: str
    obj: Any = None
    error: str | None = None
    loaded: bool = False

    def load(self) -> Any:
        if not self.loaded:
            self.loaded = True
            try:
                module_name, _, attr = self.target.partition(":")
                module = importlib.import_module(module_name)
                obj: Any = module
                for part in attr.split(".") if attr else []:
                    obj = getattr(obj, part)
                self.obj = obj
            except Exception as exc:  # a broken plugin must not break the host
                self.error = f"{type(exc).__name__}: {exc}"
        if self.error is not None:
            raise PluginLoadError(
                f"{self.group} '{self.name}' (from {self.origin}, {self.target}) "
                f"failed to load: {self.error}"
            )
        if isinstance(self.obj, type) and hasattr(self.obj, "registry_name"):
            if not vars(self.obj).get("registry_name"):
                self.obj.registry_name = self.name
        return self.obj


class Registry:
    """Name -> component for one entry-point group."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.group = group
        self._builtins = dict(builtins or {})
        self._entries: dict[str, Entry] = {}
        self._conflicts: list[Entry] = []
        self._discovered = False

    # -- discovery -------------------------------------------------------
    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for name, target in self._builtins.items():
            self._entries[name] = Entry(name, self.group, target, "deqcert")
        for ep in sorted(metadata.entry_points(group=self.group), key=_ep_sort_key):
            origin = ep.dist.name if ep.dist is not None else "unknown"
            entry = Entry(ep.name, self.group, ep.value, origin)
            existing = self._entries.get(ep.name)
            if existing is None:
                self._entries[ep.name] = entry
            elif existing.target != ep.value:
                entry.error = (
                    f"name '{ep.name}' is already registered by {existing.origin} "
                    f"({existing.target}); refused"
                )
                self._conflicts.append(entry)

    def refresh(self) -> None:
        """Forget discovered entry points (e.g. after installing a plugin)."""
        runtime = {k: e for k, e in self._entries.items() if e.origin == "<runtime>"}
        self._entries = {}
        self._conflicts = []
        self._discovered = False
        self._discover()
        self._entries.update(runtime)

    # -- registration ----------------------------------------------------
    def register(
        self, name: str, target: Any = None, *, override: bool = False
    ) -> Callable[[Any], Any] | Any:
        """Register ``target`` (an object or ``"module:attr"``) under ``name``.

        Usable as a decorator: ``@registry.register("mine")``.
        """
        if target is None:
            return lambda obj: self.register(name, obj, override=override)
        self._discover()
        if name in self._entries and not override:
            old = self._entries[name]
            raise RegistrationError(
                f"{self.kind} '{name}' is already registered by {old.origin} ({old.target}); "
                "pass override=True to replace it"
            )
        if isinstance(target, str):
            if ":" not in target:
                raise RegistrationError(f"target {target!r} must look like 'module:attr'")
            entry = Entry(name, self.group, target, "<runtime>")
        else:
            qual = f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', '?')}"
            entry = Entry(name, self.group, qual, "<runtime>", obj=target, loaded=True)
        self._entries[name] = entry
        return target

    def unregister(self, name: str) -> None:
        self._discover()
        self._entries.pop(name, None)

    # -- lookup ----------------------------------------------------------
    def names(self, pattern: str | None = None, *, include_broken: bool = False) -> list[str]:
        self._discover()
        out = []
        for name, entry in self._entries.items():
            if not include_broken and entry.loaded and entry.error is not None:
                continue
            if pattern is None or fnmatch.fnmatch(name, pattern):
                out.append(name)
        return sorted(out)

    def entries(self, *, load: bool = True) -> list[Entry]:
        """All entries (conflicting ones included), loading each to record errors."""
        self._discover()
        items = list(self._entries.values()) + list(self._conflicts)
        if load:
            for entry in items:
                if entry.error is None:
                    try:
                        entry.load()
                    except PluginLoadError:
                        pass
        return sorted(items, key=lambda e: (e.name, e.origin))

    def get(self, name: str) -> Any:
        self._discover()
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(self.names()) or "none"
            raise UnknownNameError(f"unknown {self.kind} '{name}'. Known {self.kind}s: {known}")
        return entry.load()

    def create(self, name: str, /, **options: Any) -> Any:
        return self.get(name)(**options)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries


def _ep_sort_key(ep: metadata.EntryPoint) -> tuple[int, str]:
    # deqcert's own entry points win a name clash with a plugin.
    dist = ep.dist.name if ep.dist is not None else ""
    return (0 if dist == "deqcert" else 1, dist)


REGISTRIES: dict[str, Registry] = {kind: Registry(kind, group) for kind, group in GROUPS.items()}

solvers = REGISTRIES["solver"]
certifiers = REGISTRIES["certifier"]
noises = REGISTRIES["noise"]
models = REGISTRIES["model"]
datasets = REGISTRIES["dataset"]

EXECUTORS = Registry(
    "executor",
    "deqcert.executors",
    builtins={
        "local": "deqcert.run.executors.local:LocalExecutor",
        "ray": "deqcert.run.executors.ray:RayExecutor",
    },
)
"""Where a run's inputs are certified (``local``, ``ray``); group ``deqcert.executors``."""


def create_solver(name: str, /, **options: Any) -> Any:
    """Build a registered solver, e.g. ``create_solver("anderson", max_iter=30, tol=1e-3)``."""
    return solvers.create(name, **options)


def create_certifier(name: str, /, **options: Any) -> Any:
    """Build a registered certifier (``vanilla``, ``serialized``, ...)."""
    return certifiers.create(name, **options)


def create_noise(name: str, /, **options: Any) -> Any:
    """Build a registered noise sampler, e.g. ``create_noise("gaussian", sigma=0.25)``."""
    return noises.create(name, **options)


def create_model(name: str, /, **options: Any) -> Any:
    """Build a registered (untrained) equilibrium model from its options."""
    return models.create(name, **options)


def create_dataset(name: str, /, split: str = "test", **options: Any) -> Any:
    """Build a registered dataset of ``(x, label)``, ``x`` in ``[0, 1]`` of shape ``(C, H, W)``."""
    return datasets.create(name, split=split, **options)


def list_solvers(pattern: str | None = None) -> list[str]:
    """Names of the registered solvers (optionally filtered by a glob pattern)."""
    return solvers.names(pattern)


def list_certifiers(pattern: str | None = None) -> list[str]:
    """Names of the registered certifiers."""
    return certifiers.names(pattern)


def list_noises(pattern: str | None = None) -> list[str]:
    """Names of the registered noise samplers."""
    return noises.names(pattern)


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the registered equilibrium models."""
    return models.names(pattern)


def list_datasets(pattern: str | None = None) -> list[str]:
    """Names of the registered datasets."""
    return datasets.names(pattern)

"""Registries: name lookup, duplicate registration, broken plugins (on the solver group)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from typing import Any

import pytest

import deqcert
from deqcert.errors import PluginLoadError, RegistrationError, UnknownNameError
from deqcert.registry import GROUPS, Registry
from deqcert.solvers.naive import NaiveSolver


def fresh_solvers() -> Registry:
    """A registry of the solver group that does not share state with deqcert's."""
    return Registry("solver", GROUPS["solver"])


def test_builtin_solvers_listed_in_a_fresh_interpreter() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import deqcert; print(deqcert.list_solvers())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in ("naive", "anderson", "broyden", "chain"):
        assert f"'{name}'" in out


def test_list_solvers_pattern() -> None:
    assert deqcert.list_solvers("an*") == ["anderson"]


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        deqcert.create_solver("andersen")
    message = str(info.value)
    assert "andersen" in message
    for name in ("naive", "anderson", "broyden"):
        assert name in message


def test_registry_name_comes_from_entry_point() -> None:
    assert deqcert.create_solver("broyden").describe()["name"] == "broyden"


def test_duplicate_registration_refused_unless_override() -> None:
    reg = fresh_solvers()

    class Mine(NaiveSolver):
        pass

    with pytest.raises(RegistrationError, match="override=True"):
        reg.register("naive", Mine)
    assert reg.get("naive") is NaiveSolver
    reg.register("naive", Mine, override=True)
    assert reg.get("naive") is Mine
    reg.register("mine", Mine)
    with pytest.raises(RegistrationError):
        reg.register("mine", NaiveSolver)


def test_runtime_registration_as_decorator() -> None:
    reg = fresh_solvers()

    @reg.register("damped")
    class Damped(NaiveSolver):
        pass

    assert reg.create("damped", damping=0.5).options.damping == 0.5
    assert "damped" in reg.names()


def test_broken_runtime_target_is_recorded_and_others_work() -> None:
    reg = fresh_solvers()
    reg.register("ghost", "missing.module:Thing")
    with pytest.raises(PluginLoadError, match="ghost.*ModuleNotFoundError"):
        reg.get("ghost")
    entries = {e.name: e for e in reg.entries()}
    assert entries["ghost"].error is not None and "missing" in entries["ghost"].error
    assert entries["naive"].error is None
    assert reg.create("naive", max_iter=3).options.max_iter == 3
    assert "ghost" not in reg.names() and "naive" in reg.names()


def test_broken_entry_point_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.entry_points

    def fake_entry_points(**kwargs: Any) -> Any:
        found: list[Any] = list(real(**kwargs))
        if kwargs.get("group") == GROUPS["solver"]:
            found.append(
                importlib.metadata.EntryPoint(
                    name="ghost", value="missing.module:Thing", group=GROUPS["solver"]
                )
            )
            # a plugin trying to take over a built-in name is refused
            found.append(
                importlib.metadata.EntryPoint(
                    name="naive", value="evil.module:Naive", group=GROUPS["solver"]
                )
            )
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    reg = fresh_solvers()
    assert {"ghost", "naive", "anderson", "broyden"} <= set(reg.names())
    with pytest.raises(PluginLoadError, match="missing"):
        reg.create("ghost")
    assert reg.get("naive") is NaiveSolver
    assert reg.create("anderson", m=3).options.m == 3
    records = reg.entries()
    ghost = [e for e in records if e.name == "ghost"]
    assert len(ghost) == 1 and "ModuleNotFoundError" in (ghost[0].error or "")
    evil = [e for e in records if e.target == "evil.module:Naive"]
    assert len(evil) == 1 and "refused" in (evil[0].error or "")
    assert "ghost" not in reg.names()

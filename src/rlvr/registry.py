"""Named registries: every swappable part of rlvr (advantages, losses, tasks, rewards ...) is chosen by name.

    ADVANTAGES = Registry("advantage")

    @ADVANTAGES.register("grpo")
    def grpo(rewards, group_ids, *, eps=1e-6): ...

    fn = ADVANTAGES.lookup("grpo")               # unknown name -> ValueError listing the valid names
    fn = ADVANTAGES.bind("grpo", eps=1e-4)       # checks keyword names now, before any compute

A registered function declares what the loop must hand it besides its positional tensors (`needs`): e.g.
`@ADVANTAGES.register("reinforce_pp_baseline", needs=("lengths",))`. The loop reads `ADVANTAGES.needs(name)` and
passes exactly those keywords; nobody inspects signatures to guess. A class may declare them as `needs = (...)`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any


class Registry:
    """A name -> callable table with helpful errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}
        self._needs: dict[str, tuple[str, ...]] = {}

    def register(self, name: str | None = None, *, needs: tuple[str, ...] | None = None) -> Callable:
        """Decorator; `needs` names the keywords the loop must pass at call time (default: the object's `needs`)."""

        def deco(obj: Callable) -> Callable:
            key = name or obj.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = obj
            self._needs[key] = tuple(getattr(obj, "needs", ()) if needs is None else needs)
            return obj

        return deco

    def needs(self, name: str) -> tuple[str, ...]:
        """The call-time keywords `name` declared at registration (see the module docstring)."""
        self.lookup(name)
        return self._needs[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def lookup(self, name: str) -> Callable[..., Any]:
        if name not in self._items:
            close = difflib.get_close_matches(str(name), self._items, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown {self.kind} '{name}'{hint}; choose from {self.names()}")
        return self._items[name]

    def bind(self, name: str, **kwargs: Any) -> Callable[..., Any]:
        """`lookup(name)` with keyword hyperparameters bound; a keyword the function lacks fails now."""
        fn = self.lookup(name)
        check_kwargs(fn, kwargs, f"{self.kind} '{name}'")
        return functools.partial(fn, **kwargs) if kwargs else fn

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call a registered factory/class with keyword arguments (tasks, rewards with state)."""
        fn = self.lookup(name)
        check_kwargs(fn, kwargs, f"{self.kind} '{name}'")
        return fn(**kwargs)


def check_kwargs(fn: Callable, kwargs: dict[str, Any], what: str) -> None:
    """Raise ValueError naming any keyword that `fn` does not accept."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in kwargs:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"{what} has no option '{key}'{hint}; options are {sorted(allowed)}")

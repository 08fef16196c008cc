"""Paradigm registry: name -> paradigm class, built-ins plus third-party plugins.

Modelled on gymnasium's registration: one small spec per registered name, entry points given as
``"module:attr"`` strings so that a plugin's module is imported only when it is used, a wrong name
answered with the closest registered names, and a broken plugin turned into a warning rather than
a crash of everything else. Third-party packages register through the entry-point group
``pcneuro.paradigms``::

    [options.entry_points]
    pcneuro.paradigms =
        my_task = my_package.my_module:MyTask
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Dict, List, Optional, Type, Union

from .paradigm import Paradigm

ENTRY_POINT_GROUP = "pcneuro.paradigms"


@dataclass
class ParadigmSpec:
    name: str
    entry_point: Optional[str] = None  # "module:attr", imported lazily
    cls: Optional[Type[Paradigm]] = None
    source: str = "built-in"

    def load(self) -> Type[Paradigm]:
        if self.cls is None:
            module_name, _, attr = self.entry_point.partition(":")
            obj = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            if not (isinstance(obj, type) and issubclass(obj, Paradigm)):
                raise TypeError(f"{self.entry_point} is not a pcneuro Paradigm subclass")
            self.cls = obj
        return self.cls


class UnknownParadigmError(LookupError):
    """No paradigm is registered under the requested name."""


_registry: Dict[str, ParadigmSpec] = {}
_discovered = False


def register(cls_or_name: Union[Type[Paradigm], str], entry_point: Optional[str] = None):
    """Register a paradigm class (usable as a class decorator) or a name with a lazy entry point."""
    if isinstance(cls_or_name, str):
        if entry_point is None:
            raise ValueError("register(name, entry_point='module:Class') needs an entry point")
        _registry[cls_or_name] = ParadigmSpec(cls_or_name, entry_point=entry_point, source="registered")
        return None
    cls = cls_or_name
    if not (isinstance(cls, type) and issubclass(cls, Paradigm)) or not cls.name:
        raise TypeError("register() takes a Paradigm subclass with a non-empty `name`")
    existing = _registry.get(cls.name)
    if existing is not None and existing.cls is not None and existing.cls is not cls:
        warnings.warn(f"paradigm {cls.name!r} registered twice; the later definition wins", stacklevel=2)
    _registry[cls.name] = ParadigmSpec(cls.name, cls=cls, source=cls.__module__)
    return cls


def _discover() -> None:
    """Import the built-in paradigm modules and read third-party entry points (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import pcneuro.paradigms as builtins

    for info in pkgutil.iter_modules(builtins.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{builtins.__name__}.{info.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _registry:
            warnings.warn(f"plugin paradigm {ep.name!r} ({ep.value}) is shadowed by an existing one", stacklevel=2)
            continue
        _registry[ep.name] = ParadigmSpec(ep.name, entry_point=ep.value, source=f"plugin {ep.value}")


def _spec(name: str) -> ParadigmSpec:
    _discover()
    if name not in _registry:
        close = difflib.get_close_matches(name, list(_registry), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        known = ", ".join(sorted(_registry)) or "none"
        raise UnknownParadigmError(f"unknown paradigm {name!r}{hint} (registered: {known})")
    return _registry[name]


def paradigm_class(name: str) -> Type[Paradigm]:
    spec = _spec(name)
    try:
        return spec.load()
    except Exception as exc:  # a broken plugin: one clear line, not a traceback from its import
        raise UnknownParadigmError(f"paradigm {name!r} ({spec.source}) failed to load: {exc}") from exc


def make(name: str, **overrides) -> Paradigm:
    """An instance of the paradigm registered as ``name`` with hyperparameter overrides."""
    return paradigm_class(name)(**overrides)


def list_paradigms(tag: Optional[str] = None) -> List[str]:
    """Registered names (sorted), optionally only those carrying ``tag``; broken plugins are skipped
    with a warning."""
    _discover()
    names = []
    for name in sorted(_registry):
        try:
            cls = _registry[name].load()
        except Exception as exc:  # a broken plugin must not break the others
            warnings.warn(f"paradigm plugin {name!r} failed to load: {exc}", stacklevel=2)
            continue
        if tag is None or tag in cls.tags:
            names.append(name)
    return names

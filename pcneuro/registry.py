"""Paradigm registry: name -> paradigm class, built-ins plus third-party plugins.

Modelled on gymnasium's registration: one small spec per registered name, entry points given as
``"module:attr"`` strings so that a plugin's module is imported only when it is used, a wrong name
answered with the closest registered names, and a broken plugin turned into a warning rather than
a crash of everything else. Third-party packages register through the entry-point group
``pcneuro.paradigms`` (``pyproject.toml``; docs/plugins.md)::

    [project.entry-points."pcneuro.paradigms"]
    my_task = "my_package.my_module:MyTask"

A class is checked against the plugin contract (:func:`pcneuro.testing.check_paradigm`) when it is
registered: ``@register`` raises :class:`~pcneuro.testing.ParadigmContractError`; an entry-point
plugin that breaks it is a warning in :func:`list_paradigms` and one line from :func:`make`.
A plugin module may also decorate its class with ``@register``: the same class reached both ways
is one registration, not a conflict. Two different classes under one name: the one registered in
the running process (a built-in, or ``@register`` in your code) is used, with a warning naming both.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
import sys
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Dict, List, Optional, Type, Union

from .paradigm import Paradigm
from .testing import check_paradigm

ENTRY_POINT_GROUP = "pcneuro.paradigms"


@dataclass
class ParadigmSpec:
    name: str
    entry_point: Optional[str] = None  # "module:attr", imported lazily
    cls: Optional[Type[Paradigm]] = None
    source: str = "built-in"

    def load(self) -> Type[Paradigm]:
        global _loading
        if self.cls is None:
            module_name, _, attr = self.entry_point.partition(":")
            _loading, before = self.name, _loading  # its module may @register the class itself
            try:
                obj = importlib.import_module(module_name)
            finally:
                _loading = before
            for part in attr.split("."):
                obj = getattr(obj, part)
            if not (isinstance(obj, type) and issubclass(obj, Paradigm)):
                raise TypeError(f"{self.entry_point} is not a pcneuro Paradigm subclass")
            self.cls = check_paradigm(obj)
        return self.cls


class UnknownParadigmError(LookupError):
    """No paradigm is registered under the requested name."""


_registry: Dict[str, ParadigmSpec] = {}
_discovered = False
_loading: Optional[str] = None  # the entry point being imported by ParadigmSpec.load, if any


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _target(cls: type) -> str:
    """``cls`` written as an entry point, ``module:qualname``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolves_to(entry_point: str, cls: type) -> bool:
    """Whether ``entry_point`` names ``cls``, judged without importing anything."""
    if entry_point == _target(cls):
        return True
    module_name, _, attr = entry_point.partition(":")
    obj = sys.modules.get(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    return obj is cls


def register(cls_or_name: Union[Type[Paradigm], str], entry_point: Optional[str] = None):
    """Register a paradigm class (usable as a class decorator) or a name with a lazy entry point.

    The class is checked first (:func:`pcneuro.testing.check_paradigm`): a class that breaks the
    plugin contract raises :class:`~pcneuro.testing.ParadigmContractError` listing every problem.
    """
    if isinstance(cls_or_name, str):
        if entry_point is None:
            raise ValueError("register(name, entry_point='module:Class') needs an entry point")
        _registry[cls_or_name] = ParadigmSpec(cls_or_name, entry_point=entry_point, source="registered")
        return None
    cls = cls_or_name
    if not (isinstance(cls, type) and issubclass(cls, Paradigm)) or not cls.name:
        raise TypeError("register() takes a Paradigm subclass with a non-empty `name`")
    check_paradigm(cls)
    existing = _registry.get(cls.name)
    source = _where(cls)
    if existing is not None and existing.cls is not None and existing.cls is not cls:
        if _target(existing.cls) != _target(cls):  # the same class defined again (a re-run cell) is quiet
            warnings.warn(f"paradigm {cls.name!r} is registered twice ({_where(existing.cls)} and {source}); "
                          f"using the later one, {source}", stacklevel=2)
    elif existing is not None and existing.cls is None and existing.entry_point:
        same_package = existing.entry_point.split(".")[0].split(":")[0] == cls.__module__.split(".")[0]
        if cls.name == _loading or existing.entry_point == _target(cls) or same_package:
            source = existing.source  # the plugin's own module registering its class
        else:
            warnings.warn(f"paradigm {cls.name!r}: {source} replaces the plugin entry point "
                          f"{existing.entry_point} of the same name; rename one to use both", stacklevel=2)
    _registry[cls.name] = ParadigmSpec(cls.name, entry_point=existing.entry_point if existing else None,
                                       cls=cls, source=source)
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
        existing = _registry.get(ep.name)
        if existing is None:
            _registry[ep.name] = ParadigmSpec(ep.name, entry_point=ep.value, source=f"plugin {ep.value}")
        elif existing.cls is not None and _resolves_to(ep.value, existing.cls):
            existing.source = f"plugin {ep.value}"  # its module was imported first and ran @register
        else:
            used = _where(existing.cls) if existing.cls is not None else existing.entry_point
            warnings.warn(f"paradigm {ep.name!r}: the plugin entry point {ep.value} and {used} share this name; "
                          f"using {used} (registered in this process); rename one to use both", stacklevel=2)


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

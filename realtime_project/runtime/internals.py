"""The shape of another package's internals a patch relies on, checked before it patches.

A patch that reaches into a library's private names breaks silently when a new version moves
them: a method renamed leaves the replacement attached to nothing, a parameter added makes
the library call the replacement with an argument it does not take. ``Internal`` names one
such internal by its import path (``"package.module:Class.attribute"``) and says what the
patch expects of it; ``internal_problem`` says what is wrong with it in the installed
version, or None. ``realtime_project.runtime.daphne`` is the one user (docs/runtime.md).

Where a patch has already replaced a function, the checks look at the function it replaced
(``replacing`` records it), so that checking again after patching judges the library, not
the patch.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

# The attribute a replacement carries: the library's function it stands in for.
_REPLACES = "_realtime_replaces"

F = TypeVar("F", bound=Callable[..., Any])


def replacing(original: Any, replacement: F) -> F:
    """``replacement``, marked as standing in for ``original`` (what checks look at)."""
    replacement.__dict__[_REPLACES] = original
    return replacement


def unpatched(value: Any) -> Any:
    """What ``value`` replaced, if it is a replacement (of a replacement...); else itself."""
    while callable(value) and _REPLACES in getattr(value, "__dict__", {}):
        value = value.__dict__[_REPLACES]
    return value


class Missing(LookupError):
    """An internal's path leads nowhere in the installed version."""


def resolve(path: str) -> Any:
    """The object at ``"module:Qual.name"`` (unpatched); ``Missing`` if any step is absent."""
    module_name, _, qualname = path.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise Missing(f"module {module_name} cannot be imported ({error})") from None
    for name in qualname.split(".") if qualname else ():
        try:
            value = getattr(value, name)
        except AttributeError:
            raise Missing(f"{name} is missing") from None
    return unpatched(value)


class Shape(Protocol):
    def describe(self) -> str:
        """What is expected, for the error message."""
        ...

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (the internal as installed), or None."""
        ...


@dataclass(frozen=True)
class Replaced:
    """A function the patch replaces: the library calls the replacement as it called the
    original, so the parameters must be exactly these (and a coroutine stays one)."""

    params: tuple[str, ...]
    coroutine: bool = False

    def describe(self) -> str:
        kind = "a coroutine function" if self.coroutine else "a function"
        return f"{kind} taking ({', '.join(self.params)})"

    def problem(self, value: Any) -> str | None:
        parameters = _parameters(value)
        if parameters is None:
            return f"found {_kind(value)}"
        if tuple(parameters) != self.params:
            return f"it takes ({', '.join(parameters)})"
        if inspect.iscoroutinefunction(value) != self.coroutine:
            return "it is a coroutine function" if not self.coroutine else "it is not a coroutine"
        return None


@dataclass(frozen=True)
class Called:
    """A function the patch calls with these arguments (by name); any other parameter of
    the function must have a default."""

    params: tuple[str, ...]

    def describe(self) -> str:
        return f"a function accepting ({', '.join(self.params)})"

    def problem(self, value: Any) -> str | None:
        if _parameters(value) is None:
            return f"found {_kind(value)}"
        try:
            inspect.signature(value).bind(**dict.fromkeys(self.params))
        except TypeError as error:
            return f"it cannot be called so ({error})"
        return None


@dataclass(frozen=True)
class Class:
    """A class, a subclass of the class at ``base`` when given."""

    base: str | None = None

    def describe(self) -> str:
        return f"a subclass of {self.base}" if self.base else "a class"

    def problem(self, value: Any) -> str | None:
        if not inspect.isclass(value):
            return f"found {_kind(value)}"
        if self.base is not None:
            try:
                base = resolve(self.base)
            except Missing as missing:
                return f"its base {self.base}: {missing}"
            if not issubclass(value, base):
                return f"it is not a subclass of {self.base}"
        return None


@dataclass(frozen=True)
class Constant:
    """A class or module attribute holding a value of this type (a state number)."""

    type: type

    def describe(self) -> str:
        return f"a constant of type {self.type.__name__}"

    def problem(self, value: Any) -> str | None:
        if type(value) is not self.type:
            return f"found {_kind(value)}"
        return None


@dataclass(frozen=True)
class SetsAttribute:
    """A class whose instances carry ``name``: a class attribute, or assigned to ``self``
    in the code of the class or one of its bases."""

    name: str

    def describe(self) -> str:
        return f"a class whose instances have .{self.name}"

    def problem(self, value: Any) -> str | None:
        if not inspect.isclass(value):
            return f"found {_kind(value)}"
        if self.name in dir(value):
            return None
        assignment = re.compile(rf"\bself\.{re.escape(self.name)}\s*(?::[^=\n]*)?[-+]?=[^=]")
        for klass in value.__mro__:
            if klass is not object and assignment.search(_source(klass) or ""):
                return None
        return f"neither it nor its bases set .{self.name}"


@dataclass(frozen=True)
class Mentions:
    """Code (a function, a class or a module) whose source matches ``pattern`` (a regular
    expression): a call site or a state the patch counts on, in the library's own code."""

    pattern: str

    def describe(self) -> str:
        return f"code matching {self.pattern!r}"

    def problem(self, value: Any) -> str | None:
        source = _source(value)
        if source is None:
            return f"no source for {_kind(value)}"
        if re.search(self.pattern, source) is None:
            return f"its code no longer matches {self.pattern!r}"
        return None


@dataclass(frozen=True)
class Internal:
    """One internal a behaviour of the patch relies on, and the shape it must have."""

    behaviour: str
    path: str
    shape: Shape


def internal_problem(internal: Internal) -> str | None:
    """What is wrong with ``internal`` in the installed versions, or None."""
    try:
        value = resolve(internal.path)
    except Missing as missing:
        return str(missing)
    return internal.shape.problem(value)


def installed_versions(packages: Iterable[str]) -> str:
    """``"daphne 4.2.3, autobahn 26.11.1, ..."`` for the error messages."""
    found = []
    for package in packages:
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package} not installed")
    return ", ".join(found)


def _parameters(value: Any) -> list[str] | None:
    if not callable(value) or inspect.isclass(value):
        return None
    try:
        return list(inspect.signature(value).parameters)
    except (TypeError, ValueError):
        return None


def _kind(value: Any) -> str:
    if inspect.isclass(value):
        return f"the class {value.__qualname__}"
    if callable(value):
        return f"{type(value).__name__} {getattr(value, '__qualname__', value)!r}"
    return f"{type(value).__name__} {value!r}"


@functools.lru_cache(maxsize=256)
def _cached_source(value: Any) -> str | None:
    try:
        return inspect.getsource(value)
    except (OSError, TypeError):
        return None


def _source(value: Any) -> str | None:
    try:
        return _cached_source(value)
    except TypeError:  # unhashable
        try:
            return inspect.getsource(value)
        except (OSError, TypeError):
            return None

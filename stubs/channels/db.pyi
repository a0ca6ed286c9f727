from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")

def database_sync_to_async(func: Callable[_P, _R]) -> Callable[_P, Awaitable[_R]]: ...
def __getattr__(name: str) -> Any: ...

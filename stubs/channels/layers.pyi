from typing import Any

class BaseChannelLayer:
    extensions: list[str]
    expiry: float
    capacity: int
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
    def __getattr__(self, name: str) -> Any: ...

def __getattr__(name: str) -> Any: ...

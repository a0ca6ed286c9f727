# Channels ships no type hints. These stubs declare what the project relies on being typed
# (the base classes it subclasses, the decorator it wraps its database calls in); every other
# name of the package stays ``Any``, as it was before.
from typing import Any

def __getattr__(name: str) -> Any: ...

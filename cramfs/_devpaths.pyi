"""Types of the compiled page paths (_devpaths.pyx): device/paths.py's PagePaths
interface, declared as a subclass so code typed for it takes either."""

from typing import Any

from .device.paths import PagePaths

class NativePaths(PagePaths):
    ref: Any
    def __init__(self, dev: Any, ref: Any) -> None: ...

def _constants() -> dict[str, int]: ...

"""Types of the compiled transitions (_devcore.pyx). NativeCore is a base that
device.NativeDevice puts in front of device.Device, adding no interface of its own;
NativeTier is tier.DramTier's interface, declared as a subclass so code typed for it
takes either."""

from typing import Any

from .tier import DramTier

class NativeCore: ...

class NativeTier(DramTier[Any, Any]): ...
def _constants() -> dict[str, int]: ...

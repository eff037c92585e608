"""Types of the compiled DRAM tier (_dramtier.pyx): tier.DramTier's interface, declared
as a subclass so code typed for it takes either."""

from typing import Any

from .tier import DramTier

class NativeTier(DramTier[Any, Any]): ...

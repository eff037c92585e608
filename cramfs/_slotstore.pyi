"""Types of the compiled slot store (_slotstore.pyx): device/slots.py's SlotStore
interface, declared as a subclass so code typed for it takes either."""

from .device.slots import SlotStore

class NativeSlotStore(SlotStore): ...

def _constants() -> dict[str, int]: ...

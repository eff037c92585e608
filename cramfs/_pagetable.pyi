"""Types of the compiled page table (_pagetable.pyx): pagetable.PageTable's interface.

Declared as a subclass so that code typed for PageTable takes either; at run time
it is a class of its own with the same methods and attributes."""

from .pagetable import PageTable

class NativeTable(PageTable): ...

# The page encoder's C interface, for the page paths (_devpaths.pyx) to encode a written page without
# a Python call or a tuple. (final: no subclass exists, so the call is a direct one.)
cimport cython


@cython.final
cdef class Lz4PageEncoder:
    cdef int ident
    cdef int none_id
    cdef int huge_threshold
    cdef void *state
    cdef bytes c_encode(self, bytes page, int *algo, bint *huge)

"""cramfs: emulate a compressed-RAM memory device as a FUSE filesystem of page slots.

The core (config, compressors, pool, tier, levels, events, device, namespace,
control) knows nothing of FUSE; fuse_ops.py adapts it to pyfuse3 and
cli.py/daemon.py mount it.
"""

__version__ = "0.1.0"

"""The lab around the device: benchmark, swap experiment, soak, workload, and their helpers.

None of this is needed to mount cramfs; the daemon imports nothing from here.
`matplotlib` (for plots) is the `lab` extra.
"""

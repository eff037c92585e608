"""`python -m cramfs.workload`, kept working: the module itself is cramfs.lab.workload."""

import sys

from .lab.workload import main

if __name__ == "__main__":
    sys.exit(main())

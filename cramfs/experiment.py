"""`python -m cramfs.experiment`, kept working: the module itself is cramfs.lab.experiment."""

import sys

from .lab.experiment import main

if __name__ == "__main__":
    sys.exit(main())

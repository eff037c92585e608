"""`python -m cramfs.nullfs`, kept working: the module itself is cramfs.lab.nullfs."""

import sys

from .lab.nullfs import main

if __name__ == "__main__":
    sys.exit(main())

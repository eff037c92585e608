"""`python -m cramfs.bench`, kept working: the module itself is cramfs.lab.bench."""

import sys

from .lab.bench import main

if __name__ == "__main__":
    sys.exit(main())

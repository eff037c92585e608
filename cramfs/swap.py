"""`python -m cramfs.swap`, kept working: the module itself is cramfs.lab.swap."""

import sys

from .lab.swap import main

if __name__ == "__main__":
    sys.exit(main())

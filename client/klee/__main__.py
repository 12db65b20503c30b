"""`python -m klee`."""

import sys

from klee.cli import main

if __name__ == "__main__":
    sys.exit(main())

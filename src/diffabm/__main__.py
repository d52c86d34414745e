"""`python -m diffabm` runs the command-line entry point."""

import sys

from diffabm.cli import main

sys.exit(main())

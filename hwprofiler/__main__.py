"""`python -m hwprofiler` runs the CLI."""

import sys

from hwprofiler.cli import main

sys.exit(main())

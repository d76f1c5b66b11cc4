import sys

from hilprune.cli.main import main

sys.exit(main())

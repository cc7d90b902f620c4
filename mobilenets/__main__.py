"""`python -m mobilenets ...` (what `torchrun -m mobilenets train ...` runs): the same CLI."""

import sys

from mobilenets.cli import main

sys.exit(main())

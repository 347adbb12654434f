"""`python -m fleetd.cli ...` runs fleetctl."""

import sys

from fleetd.cli import main

sys.exit(main())

import sys

from fleetstream.cli import main

sys.exit(main())

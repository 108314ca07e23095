import sys

from slotkeeper.cli import main

sys.exit(main())

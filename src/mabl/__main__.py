import sys

from mabl.cli import main

sys.exit(main())

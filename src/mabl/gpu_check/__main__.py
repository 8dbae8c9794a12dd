"""``python -m mabl.gpu_check``."""

import sys

from mabl.gpu_check import main

sys.exit(main())

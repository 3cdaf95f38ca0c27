"""``python -m deqcert.train CONFIG.toml``."""

import sys

from . import main

sys.exit(main())

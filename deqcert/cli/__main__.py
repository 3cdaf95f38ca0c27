"""``python -m deqcert.cli``: the command line."""

from . import main

main()

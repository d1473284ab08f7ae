"""`perception info`: see `perception info --help`."""
import sys

from perception.cli import main

sys.exit(main(["info", *sys.argv[1:]]))

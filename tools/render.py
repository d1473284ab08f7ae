"""`perception render`: see `perception render --help`."""
import sys

from perception.cli import main

sys.exit(main(["render", *sys.argv[1:]]))

"""`perception synth`: see `perception synth --help`."""
import sys

from perception.cli import main

sys.exit(main(["synth", *sys.argv[1:]]))

"""`python -m exporter` is the same as the `trueconf-exporter` command."""

from exporter.cli import main

main()

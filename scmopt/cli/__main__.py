"""`python -m scmopt.cli ...` runs the command line."""

from scmopt.cli import main

main()

"""`python -m picolytics.cli`, as the tests and the binary's build run it."""

from picolytics.cli import main

main()

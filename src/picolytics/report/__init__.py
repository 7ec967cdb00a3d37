"""`picolytics report`: the numbers in the terminal, as JSON or CSV."""

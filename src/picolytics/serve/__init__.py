"""The public and admin apps, static files, the server run, workers and metrics."""

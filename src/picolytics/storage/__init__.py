"""PostgreSQL: connection, embedded server, migrations, the batch writer and its sites
and sessions, the queue in front of it, maintenance, prune."""

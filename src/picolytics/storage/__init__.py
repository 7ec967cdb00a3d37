"""PostgreSQL: connection, embedded server, migrations, writer, sessions, pipeline, prune."""

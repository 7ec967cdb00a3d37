"""What the test modules share; no test module imports another, or conftest.

- database:   the PostgreSQL fixtures (a pytest plugin, see tests/conftest.py) and
              helpers that read, wait on or set up databases, clusters and roles;
- events:     ready-made events and the batch writer, as the ingestion tests use them;
- processes:  child processes: one free port, one clean environment, `picolytics` on
              the command line and `picolytics serve` as a running server;
- reporting:  the reporting dataset, the reader role's relations and the Grafana
              dashboard's queries (tests/test_dashboard.py, tests/test_report.py);
- browser:    local HTTP servers and a beacon recorder for the browser tests;
- faultproxy: a TCP proxy that injects database faults.
"""

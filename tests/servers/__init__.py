"""Real servers started on loopback for the tests (PostgreSQL, ...)."""

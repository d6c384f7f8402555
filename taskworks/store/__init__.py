"""The SQL system of record: SQLite (WAL) by default, PostgreSQL (psycopg 3) in production."""

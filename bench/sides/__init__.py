"""The sides a scenario compares. Each module is importable by its worker processes."""

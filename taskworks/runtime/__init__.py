"""The task runtime: middleware around every task."""

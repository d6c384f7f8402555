"""The embedded broker (real valkey-server)."""

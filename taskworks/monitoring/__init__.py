"""Looking at the running system: queue depths, workers."""

"""The seed's task patterns (examples/), run on real workers."""

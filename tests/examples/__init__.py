"""The patterns guide's task patterns (examples/), run on real workers."""

"""fedarena attacks and defenses in a Flower app (see ../README.md)."""

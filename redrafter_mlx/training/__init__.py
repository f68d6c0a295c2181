"""Drafter training's parts (the command line is redrafter_mlx.train)."""

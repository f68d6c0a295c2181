"""The OpenAI-compatible server's parts (the command line is redrafter_mlx.server)."""

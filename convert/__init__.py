"""Import PyTorch (Hugging Face), Apple ReDrafter and GGUF weights into MLX directories."""

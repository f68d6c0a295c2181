"""The networks and their files: the target LLM, the drafter, configs, the KV cache, loading."""

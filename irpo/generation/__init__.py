"""Generators: the interface (base.py) and its backends (hf.py, vllm.py)."""

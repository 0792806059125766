"""Planning a run before it starts: memory and FLOP arithmetic (sizing), this machine's
view of a config (capacity) and the printed plan (plan)."""

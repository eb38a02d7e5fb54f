"""System tests: the real processes (`python -m ...`, as `make run` starts them) restarted,
killed and stopped under load, one instance or two of each (marked `system`)."""

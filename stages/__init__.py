"""DVC stage entry points: each module is a pure function of its inputs plus a thin `main(argv) -> int`
(stages/_cli.py)."""

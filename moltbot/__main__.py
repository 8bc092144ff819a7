from moltbot.cli import main

# Guarded: worker processes (multiprocessing, spawn) import this module again as __mp_main__.
if __name__ == "__main__":
    raise SystemExit(main())

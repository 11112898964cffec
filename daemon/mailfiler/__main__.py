from mailfiler.cli.main import main

# guarded: the parse helpers (spawned processes) import this module as __mp_main__
if __name__ == "__main__":
    main()

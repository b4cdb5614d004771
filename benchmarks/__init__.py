"""Performance harness: each module is a script with a ``main(argv)`` and a tiny-size mode."""

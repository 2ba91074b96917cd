"""The ``promptrec`` command line (thin: every command calls the library)."""

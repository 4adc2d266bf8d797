"""The ``hive`` command line: one module per command group."""

"""The hive: ingest, the learning store, rounds, the registry, release, fleet and the CLI."""

__version__ = "0.1.0"

"""The hive's door: who may write, what is admitted, and the ingest loop that stores it."""

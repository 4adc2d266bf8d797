"""The learning store: its interface, Parquet segments and the SQLite catalog."""

"""Event schemas, topic names, Kafka wrappers, the codec and the embedded broker."""

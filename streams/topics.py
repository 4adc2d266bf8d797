"""Topic names: the one place they are spelled."""

LEARNINGS = "hive.learnings"
LEARNINGS_DLQ = "hive.learnings.dlq"
FLEET = "hive.fleet"
CORE = "hive.core"

ALL_TOPICS = (LEARNINGS, LEARNINGS_DLQ, FLEET, CORE)

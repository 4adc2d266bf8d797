"""The SQL of the learning store's catalog: its schema, its column lists, and the WHERE clause its queries share."""

from __future__ import annotations

QUARANTINE_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    learning_id TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    agent_id    TEXT NOT NULL,
    skill       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    round_id    TEXT,
    recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX IF NOT EXISTS quarantine_seq ON quarantine(seq);
"""

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS segments (
    name       TEXT PRIMARY KEY,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    row_count  INTEGER NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS learnings (
    id       TEXT PRIMARY KEY,
    seq      INTEGER NOT NULL UNIQUE,
    agent_id TEXT NOT NULL,
    skill    TEXT NOT NULL,
    segment  TEXT NOT NULL REFERENCES segments(name)
);
CREATE INDEX IF NOT EXISTS learnings_agent ON learnings(agent_id, seq);
CREATE INDEX IF NOT EXISTS learnings_skill ON learnings(skill, seq);
CREATE TABLE IF NOT EXISTS offsets (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    reason           TEXT NOT NULL,
    detail           TEXT NOT NULL,
    source_topic     TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset    INTEGER NOT NULL,
    size             INTEGER NOT NULL,
    payload_sha256   TEXT NOT NULL,
    payload_head     BLOB NOT NULL,
    record_key       TEXT,
    agent_id         TEXT,
    recorded_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- The payload hash is part of the identity: an in-memory broker that restarts reuses offsets.
    UNIQUE (source_topic, source_partition, source_offset, payload_sha256)
);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters(reason, id);
"""
    + QUARANTINE_SCHEMA
)
QUARANTINE_COLUMNS = "learning_id, seq, agent_id, skill, reason, detail, round_id"
# A reason or detail that the distill job wrote is kept, but bounded.
REASON_CHARS = 64
DETAIL_CHARS = 2000

DEAD_LETTER_COLUMNS = (
    "reason, detail, source_topic, source_partition, source_offset, size, payload_sha256, payload_head, "
    "record_key, agent_id"
)


def learnings_where(
    after_seq: int, upto_seq: int | None, agent_id: str | None, skill: str | None, skip_quarantined: bool = False
) -> tuple[str, list[object]]:
    """The WHERE clause over ``learnings`` for these filters (None: no filter), and its parameters."""
    clauses: list[str] = ["seq > ?"]
    params: list[object] = [int(after_seq)]
    for clause, value in (("seq <= ?", upto_seq), ("agent_id = ?", agent_id), ("skill = ?", skill)):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    if skip_quarantined:
        clauses.append("id NOT IN (SELECT learning_id FROM quarantine)")
    return "WHERE " + " AND ".join(clauses), params

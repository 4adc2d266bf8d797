"""Distillation rounds: the record book, opening, running, the lock, cancelling, progress and triggers."""

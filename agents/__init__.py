"""The agent SDK and runtime: a core model plus the agent's own on-the-job learning."""

"""What ``hive inspect`` answers: cores side by side, and what each agent gave a round."""

"""``hive ui``: the web dashboard over one hive's fleet, rounds, cores, learnings and dead letters."""

"""``python -m hive``: the same CLI as the ``hive`` script."""

from hive.cli.app import main

main()

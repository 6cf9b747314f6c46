"""The `tcpstack` command line (also `python -m stack`)."""

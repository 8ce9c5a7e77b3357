"""Pure tests: functions and objects in memory, no server, database, process or file written;
they may read files checked into the repository. The layer runs in seconds
(``make test-fast``)."""

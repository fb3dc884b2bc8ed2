"""The domain: functions that take a connection, change state with guarded SQL, and never commit."""

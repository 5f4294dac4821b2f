"""The hub's plumbing to Redis, shared by the broker, presence, the figures board and the
shared rate limits: the clients of each deployment (`clients`), what a failure of Redis is
and what follows from it (`failures`), and how Lua scripts are registered, loaded and
called (`scripts`). It knows nothing of rooms, presence or limits."""

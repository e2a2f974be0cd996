-- Store a new version of a session, unless it was deleted (or is gone and expired): see
-- write_version.lua, which does it.
-- KEYS[1] the session; ARGV[1] the new record; ARGV[2] its TTL (ms); ARGV[3] the rest of its
-- full age (ms); ARGV[4] now (ms, web server's clock); ARGV[5] "1" if a missing key was evicted
-- (the engine saw the session live) rather than expired ("2": and it is logged in, see
-- write_version.lua).
-- Returns 1 stored, 2 stored again after eviction, 3 missing and not stored (ARGV[5] "2"),
-- 0 deleted (a tombstone), -1 gone.
return write_version(
  KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5])

-- Settle a session that came back from probation.
-- KEYS[1] the session; ARGV[1] the rest of its age (ms, by the web server's clock).
-- Returns 1 if the session was on probation and is now settled with its full TTL, else 0. Only a
-- record still on probation changes (SETRANGE keeps the value's TTL, PEXPIRE sets the new one):
-- a tombstone written since the load stays a tombstone, a session settled since stays as it is.
if header_of(KEYS[1]) ~= 'P' then
  return 0
end
redis.call('SETRANGE', KEYS[1], 0, 'S')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1

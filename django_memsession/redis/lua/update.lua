-- Store a new version of a session, unless it was deleted (or is gone and expired).
-- KEYS[1] the session; ARGV[1] the new record; ARGV[2] its TTL (ms); ARGV[3] the rest of its
-- full age (ms); ARGV[4] now (ms, web server's clock); ARGV[5] "1" if a missing key was evicted
-- (the engine saw the session live) rather than expired.
-- Returns 1 stored, 2 stored again after eviction, 0 deleted (a tombstone), -1 gone (expired;
-- a record expired by the web server's clock is deleted then, so that nothing after the script,
-- the near cache's PEXPIRE ... GT, can lengthen its TTL).
-- A record on probation ("P") written over a settled one ("S": another request saw the session
-- come back) is stored settled, with its full age: a save never puts a session back on probation.
-- A value that is not ours (see header_of.lua) counts as a missing key: written over when the
-- session may be stored again, else deleted.
local kind, expires_at = header_of(KEYS[1])
if kind == 'T' then
  return 0
end
local record = ARGV[1]
local ttl = tonumber(ARGV[2])
if kind == '' then
  if ARGV[5] ~= '1' then
    redis.call('DEL', KEYS[1])  -- nothing, or a value not ours: gone either way
    return -1
  end
  redis.call('SET', KEYS[1], record, 'PX', ttl)
  return 2
end
if expires_at <= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
  return -1
end
if kind == 'S' and string.byte(record, 1) == 80 then
  record = 'S' .. string.sub(record, 2)
  ttl = tonumber(ARGV[3])
end
redis.call('SET', KEYS[1], record, 'PX', ttl)
return 1

-- A later write in a memory process, mirrored: written over anything but a tombstone.
-- KEYS[1] the session; ARGV[1] the record; ARGV[2] its TTL (ms). Returns 1 written; 0 a
-- tombstone kept. A logged-in session is indexed before (index.lua).
-- Writes over a value that is not ours (see header_of.lua), as over nothing.
if header_of(KEYS[1]) == 'T' then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1

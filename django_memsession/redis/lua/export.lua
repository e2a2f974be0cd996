-- A copy made by exportsessions: written only over nothing, or over a record that expires
-- earlier (an older copy). KEYS[1] the session; ARGV[1] the record; ARGV[2] its TTL (ms);
-- ARGV[3] its expiry (ms since the epoch, as in the record's header). Returns 1 written; 0 a
-- tombstone kept; -1 a newer copy kept. A logged-in session is indexed before (index.lua).
-- Writes over a value that is not ours (see header_of.lua), as over nothing.
local kind, expires_at = header_of(KEYS[1])
if kind == 'T' then
  return 0
end
if kind ~= '' and expires_at >= tonumber(ARGV[3]) then
  return -1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1

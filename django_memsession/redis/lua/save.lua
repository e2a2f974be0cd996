-- Store a logged-in session (create or update), and index it, atomically.
-- KEYS[1] the session, KEYS[2] its user's hash, KEYS[3] the hash of the user it was loaded as
-- (the same, or another user's, or an unused name).
-- ARGV[1..5] as update.lua (record, ttl, full ttl, now ms, may restore; see write_version.lua);
-- ARGV[6] the session key (the field); ARGV[7] now in seconds (10 digits); ARGV[8] "1" to set the
-- client to ARGV[9], else keep the one noted; ARGV[10] the per-user limit (0: none);
-- ARGV[11] the key prefix; ARGV[12] the tombstone TTL (ms); ARGV[13] "c" to create (SET NX),
-- "u" to update; ARGV[14] "1" to index under KEYS[2] (a logged-in session), "0" to only remove
-- the member from KEYS[3] (a session that was logged in and is not any more); ARGV[15]
-- (optional) when a new member was created, if not now (imports); ARGV[16] (optional) the key
-- this session replaces (cycle_key): not counted against the limit, it is about to go;
-- ARGV[17] the least TTL (ms) the hash gets: the session's full age and one interval more (so
-- that the plain saves of the next interval, see the engine's _indexed(), stay within it).
-- Returns {result, ended}: result as update.lua (1, 2, 0, -1), or 3 for a create of a taken
-- key; ended, how many of the user's other sessions the limit ended.
-- Builds key names from the prefix (ARGV[11] .. a member): the other sessions of the user.
local now_ms = tonumber(ARGV[4])
local result = 1
if ARGV[13] == 'c' then
  if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then
    return {3, 0}
  end
else
  result = write_version(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), now_ms, ARGV[5])
  if result < 1 then
    return {result, 0}  -- 0 deleted (a tombstone), -1 gone
  end
end
local field = ARGV[6]
if ARGV[14] ~= '1' or KEYS[3] ~= KEYS[2] then
  redis.call('HDEL', KEYS[3], field)
end
if ARGV[14] ~= '1' then
  return {result, 0}
end
local users = KEYS[2]
local old = redis.call('HGET', users, field)
local created = ARGV[15] or ARGV[7]
local client = ARGV[9]
if old then
  created = string.sub(old, 1, 10)
  if ARGV[8] ~= '1' then
    client = string.sub(old, 21)
  end
end
redis.call('HSET', users, field, created .. ARGV[7] .. client)
local hash_ttl = tonumber(ARGV[17])
if redis.call('PTTL', users) < hash_ttl then
  redis.call('PEXPIRE', users, hash_ttl)
end
local limit = tonumber(ARGV[10])
if old or limit == 0 or result == 2 then
  return {result, 0}
end
local members = redis.call('HGETALL', users)
local others = {}
for i = 1, #members, 2 do
  local other = members[i]
  if other ~= field and other ~= ARGV[16] then
    if live(ARGV[11] .. other, now_ms) then
      table.insert(others, {other, string.sub(members[i + 1], 11, 20)})
    else
      redis.call('HDEL', users, other)
    end
  end
end
local over = #others + 1 - limit
if over <= 0 then
  return {result, 0}
end
table.sort(others, function(a, b) return a[2] < b[2] end)
for i = 1, over do
  redis.call('SET', ARGV[11] .. others[i][1], 'T', 'PX', ARGV[12])
  redis.call('HDEL', users, others[i][1])
end
return {result, over}

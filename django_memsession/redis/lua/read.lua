-- The live members of one hash, with each session's expiry; the dead ones are removed (unless
-- ARGV[3] is "1": a dry run). KEYS[1] the hash; ARGV[1] the prefix; ARGV[2] now (ms).
-- Returns {removed, field, facts, expiry (ms), field, facts, expiry, ...}.
-- Builds key names from the prefix (ARGV[1] .. a member): the sessions it reads.
local members = redis.call('HGETALL', user_hash(KEYS[1]))
local found = {0}
local removed = 0
for i = 1, #members, 2 do
  local expires = live(ARGV[1] .. members[i], tonumber(ARGV[2]))
  if expires then
    table.insert(found, members[i])
    table.insert(found, members[i + 1])
    table.insert(found, expires)
  else
    removed = removed + 1
    if ARGV[3] ~= '1' then
      redis.call('HDEL', KEYS[1], members[i])
    end
  end
end
found[1] = removed
return found

-- End the named members of one hash: a tombstone for each session still indexed there (never
-- another user's), and the member removed. KEYS[1] the hash; ARGV[1] the prefix; ARGV[2] the
-- tombstone TTL (ms); ARGV[3] now (ms); ARGV[4..] the fields. Returns how many live ones ended.
-- Builds key names from the prefix (ARGV[1] .. a field): the sessions it ends.
user_hash(KEYS[1])
local ended = 0
for i = 4, #ARGV do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    local key = ARGV[1] .. ARGV[i]
    if live(key, tonumber(ARGV[3])) then
      ended = ended + 1
    end
    redis.call('SET', key, 'T', 'PX', ARGV[2])
  end
end
return ended

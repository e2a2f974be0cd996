-- Remove the members found dead, each only if its facts are still what was read: a member written
-- again since (a login or a save of its session, which index it again before writing the
-- record) is kept. KEYS[1] the hash; ARGV field, facts, field, facts, ... Returns how many went.
user_hash(KEYS[1])
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return removed

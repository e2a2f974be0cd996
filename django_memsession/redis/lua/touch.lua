-- Refresh a member's last use (and its client, when ARGV[3] is "1"): only a member still there,
-- so a touch after a logout adds nothing. KEYS[1] the hash; ARGV[1] the field; ARGV[2] now
-- (10 digits); ARGV[4] the client. Returns 1 if the member was there, else 0.
local old = redis.call('HGET', user_hash(KEYS[1]), ARGV[1])
if not old then
  return 0
end
local client = string.sub(old, 21)
if ARGV[3] == '1' then
  client = ARGV[4]
end
redis.call('HSET', KEYS[1], ARGV[1], string.sub(old, 1, 10) .. ARGV[2] .. client)
return 1

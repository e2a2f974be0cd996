-- End one session: a tombstone over whatever it holds. KEYS[1] the session; ARGV[1] the
-- tombstone TTL (ms); ARGV[2] now (ms). Returns 1 if a live session ended, else 0.
local ended = 0
if live(KEYS[1], tonumber(ARGV[2])) then
  ended = 1
end
redis.call('SET', KEYS[1], 'T', 'PX', ARGV[1])
return ended

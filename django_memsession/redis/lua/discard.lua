-- Delete a value a load found to be no session, unless it has been written since.
-- KEYS[1] a session; ARGV[1] what a load found there, from byte ARGV[2] on (1: the whole value;
-- 17: a record's data, whose header a promotion may have changed since). Deletes the key if it
-- still holds that, or holds a value of another type (never ours); otherwise it has been written
-- since (a tombstone, whose byte 17 on is empty as a record's empty data is, always counts as
-- written since), and is left alone. Returns 1 if it deleted the key.
local held = redis.pcall('GET', KEYS[1])
if type(held) == 'table'
    or (held and held ~= 'T' and string.sub(held, tonumber(ARGV[2])) == ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0

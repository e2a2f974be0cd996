-- A user's hash as read by the index: every member and its facts (no ARGV), or the facts of the
-- named members (ARGV: fields; false for one not there). KEYS[1] the hash.
user_hash(KEYS[1])
if #ARGV == 0 then
  return redis.call('HGETALL', KEYS[1])
end
return redis.call('HMGET', KEYS[1], unpack(ARGV))

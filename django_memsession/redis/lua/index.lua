-- Index a logged-in session under its user: the first step of a save that logs a session in (or
-- keeps it logged in), always before the session's record says it is logged in (see store.py's
-- "Steps"). KEYS[1] the user's hash. ARGV[1] the member (the session key); ARGV[2] now in
-- seconds (10 digits); ARGV[3] "1" to set the client to ARGV[4], else keep the one noted;
-- ARGV[5] when a new member was created, if not now (imports), or ''; ARGV[6] the least TTL (ms)
-- the hash gets; ARGV[7] "1" to return the other members of a new one (a login under a per-user
-- limit); ARGV[8] "1" to keep a member already there as it is (imports).
-- Returns {new, field, facts, field, facts, ...}: new 1 if the member was added, else 0; the
-- other members only when asked and new.
user_hash(KEYS[1])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and ARGV[8] == '1' then
  return {0}
end
local created = ARGV[2]
if ARGV[5] ~= '' then
  created = ARGV[5]
end
local client = ARGV[4]
if old then
  created = string.sub(old, 1, 10)
  if ARGV[3] ~= '1' then
    client = string.sub(old, 21)
  end
end
redis.call('HSET', KEYS[1], ARGV[1], created .. ARGV[2] .. client)
local least = tonumber(ARGV[6])
if redis.call('PTTL', KEYS[1]) < least then
  redis.call('PEXPIRE', KEYS[1], least)
end
if old or ARGV[7] ~= '1' then
  return {old and 0 or 1}
end
local found = {1}
local members = redis.call('HGETALL', KEYS[1])
for i = 1, #members, 2 do
  if members[i] ~= ARGV[1] then
    table.insert(found, members[i])
    table.insert(found, members[i + 1])
  end
end
return found

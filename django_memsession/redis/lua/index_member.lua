-- export.lua and mirror.lua end with index(at), for a logged-in session: KEYS[2] its user's hash
-- (absent: an anonymous session, nothing indexed); from ARGV[at], the member (the session key),
-- its facts, and the least TTL (ms) the hash gets. A member already there keeps its facts.
local function index(at)
  if KEYS[2] then
    redis.call('HSETNX', user_hash(KEYS[2]), ARGV[at], ARGV[at + 1])
    local least = tonumber(ARGV[at + 2])
    if redis.call('PTTL', KEYS[2]) < least then
      redis.call('PEXPIRE', KEYS[2], least)
    end
  end
  return 1
end

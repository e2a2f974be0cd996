-- A user's hash of the index, as every script that touches one first makes sure of it: a key of
-- another type at its name (typed in with redis-cli, or corrupted) is not ours; it is deleted, and
-- the hash is then as absent, so no login, logout or listing fails on it (WRONGTYPE).
-- Sent first in every script that calls user_hash() (see scripts.py).
local function user_hash(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'hash' and kind ~= 'none' then
    redis.call('DEL', key)
  end
  return key
end

-- What a session key holds, read by every script that reads one: ``kind, expires`` for a record
-- (kind 'S' settled or 'P' on probation, then its expiry as 15 ASCII digits of ms; see store.py),
-- 'T' for a tombstone, and '' for nothing there or for a value that is not ours (a key of another
-- type, a string in no format we write: typed in with redis-cli, or corrupted). Such a value is
-- never a session nor a logout: the scripts treat it as nothing and write over it (or delete it)
-- instead of failing on it. Python's twin: store.foreign().
-- Sent first in every script that calls header_of() (see scripts.py).
local function header_of(key)
  local header = redis.pcall('GETRANGE', key, 0, 15)
  if type(header) ~= 'string' then
    return ''
  end
  if header == 'T' then
    return 'T'
  end
  if #header == 16 and string.find(header, '^[SP]%d+$') then
    return string.sub(header, 1, 1), tonumber(string.sub(header, 2))
  end
  return ''
end

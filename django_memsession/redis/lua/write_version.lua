-- What update.lua does: store a new version of a session, unless it was deleted (or is gone and
-- expired). Needs header_of.lua before it.
-- key the session; record the new record; ttl its TTL (ms); full_ttl the rest of its full age
-- (ms); now_ms now (ms, web server's clock); may_restore "1" if a missing key was evicted (the
-- engine saw the session live) rather than expired, "2" if so but the session is logged in (it
-- is indexed again before it is stored: answered 3, nothing written).
-- Returns 1 stored, 2 stored again after eviction, 3 (may_restore "2") missing and not stored,
-- 0 deleted (a tombstone), -1 gone (expired;
-- a record expired by the web server's clock is deleted then, so that nothing after the script,
-- the near cache's PEXPIRE ... GT, can lengthen its TTL).
-- A record on probation ("P") written over a settled one ("S": another request saw the session
-- come back) is stored settled, with its full age: a save never puts a session back on probation.
-- A value that is not ours (see header_of.lua) counts as a missing key: written over when the
-- session may be stored again, else deleted.
local function write_version(key, record, ttl, full_ttl, now_ms, may_restore)
  local kind, expires_at = header_of(key)
  if kind == 'T' then
    return 0
  end
  if kind == '' then
    if may_restore == '2' then
      return 3
    end
    if may_restore ~= '1' then
      redis.call('DEL', key)  -- nothing, or a value not ours: gone either way
      return -1
    end
    redis.call('SET', key, record, 'PX', ttl)
    return 2
  end
  if expires_at <= now_ms then
    redis.call('DEL', key)
    return -1
  end
  if kind == 'S' and string.byte(record, 1) == 80 then
    record = 'S' .. string.sub(record, 2)
    ttl = full_ttl
  end
  redis.call('SET', key, record, 'PX', ttl)
  return 1
end

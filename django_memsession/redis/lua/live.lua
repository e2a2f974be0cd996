-- What the index's scripts share: whether a member's session is live (its expiry in ms if so,
-- else nil). Needs header_of.lua before it.
local function live(key, now_ms)
  local kind, expires = header_of(key)
  if (kind ~= 'S' and kind ~= 'P') or expires <= now_ms then
    return nil
  end
  return expires
end

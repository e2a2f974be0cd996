-- Remove members from a user's hash: the last step of a logout, of a user switch (the old user's
-- hash), of ending sessions (after their tombstones). KEYS[1] the hash; ARGV the members.
-- Returns how many were there.
user_hash(KEYS[1])
return redis.call('HDEL', KEYS[1], unpack(ARGV))

-- reset.lua: forget counters (an admin's reset). KEYS: the counters, all of one hash tag.
if #KEYS > 0 then
  return redis.call("DEL", unpack(KEYS))
end
return 0

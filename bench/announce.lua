-- wrk script: HTTP announces spread over the swarms listed in the file named by $HASHES
-- (one percent-encoded info-hash a line), each from a random peer id and port; a quarter
-- are seeders. bench/tracker.sh writes the file from the same hashes it whitelists.
local hashes = {}
for line in io.lines(os.getenv("HASHES")) do
  hashes[#hashes + 1] = line
end
local chars = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
math.randomseed(os.time())

request = function()
  local h = hashes[math.random(#hashes)]
  local id = {"-WR0001-"}
  for i = 1, 12 do
    local c = math.random(#chars)
    id[#id + 1] = chars:sub(c, c)
  end
  local left = 1048576
  if math.random(4) == 1 then left = 0 end
  local path = "/announce?info_hash=" .. h .. "&peer_id=" .. table.concat(id) ..
    "&port=" .. math.random(1024, 65000) .. "&uploaded=0&downloaded=0&left=" .. left .. "&compact=1&numwant=50"
  return wrk.format("GET", path)
end

-- wrk script for the "-cold" variants: every request carries the next token from a
-- file of distinct, valid JWTs (one per line), so a verified-token cache never hits
-- and each request pays a full signature check. Usage:
--   wrk ... -s bench/tokens.lua <url> -- <tokens-file>
-- Each wrk thread starts at a different offset; the file must hold more tokens than
-- any cache in front of the verifier (meshgate: 8192, the bench's jwt_authn: 1024).
local tokens = {}
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  if #tokens == 0 then error("no tokens in " .. tostring(args[1])) end
  i = (id or 0) * 7919 % #tokens
end

function setup(thread)
  thread:set("id", (counter or 0))
  counter = (counter or 0) + 1
end

function request()
  i = i % #tokens + 1
  -- Headers given with -H (run.py --browser-headers) go along.
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["Host"] = wrk.host
  headers["Authorization"] = "Bearer " .. tokens[i]
  return wrk.format(nil, nil, headers)
end

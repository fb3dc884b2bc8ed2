-- POST /v1/session/refresh in bearer mode, from a pool of refresh tokens (BENCH_TOKENS). Every
-- token is single use: a request takes one from the queue, and its answer puts the rotated one
-- back, so the run never presents a spent token (which would end its session after the reuse
-- interval) and every request is a normal rotation.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
common.install()

local path = os.getenv("BENCH_PATH") or "/v1/session/refresh"
local headers = {["Content-Type"] = "application/json", ["X-Anonid-Token"] = "bearer"}
local queue = {}
local head, tail = 1, 0

function init(args)
  for _, token in ipairs(common.load_tokens()) do
    tail = tail + 1
    queue[tail] = token
  end
end

function request()
  local token = "exhausted"  -- the pool ran dry (answers were lost): a 401, counted as an error
  if head <= tail then
    token = queue[head]
    queue[head] = nil
    head = head + 1
  end
  return wrk.format("POST", path, headers, '{"refresh_token":"' .. token .. '"}')
end

function response(status, response_headers, body)
  local token = string.match(body, '"refresh_token":"([^"]+)"')
  if token ~= nil then
    tail = tail + 1
    queue[tail] = token
  end
  if common.response ~= nil and tonumber(os.getenv("BENCH_STOP_AFTER") or "0") > 0 then
    common.response(status, response_headers, body)
  end
end

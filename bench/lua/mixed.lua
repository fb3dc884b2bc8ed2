-- The memory run: POST /v1/anonymous, GET /v1/me and PATCH /v1/me/data in turn, with sessions
-- from the pool; BENCH_STOP_AFTER bounds the number of responses per thread.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
common.install()

local tokens
local i = 0

function init(args)
  tokens = common.load_tokens()
  i = (thread_id or 1) * 997
end

function request()
  i = i + 1
  local kind = i % 3
  if kind == 0 then
    return wrk.format("POST", "/v1/anonymous", {["Content-Length"] = "0"}, nil)
  end
  local headers = {}
  common.auth_header(headers, tokens[(i % #tokens) + 1])
  if kind == 1 then
    return wrk.format("GET", "/v1/me", headers, nil)
  end
  headers["Content-Type"] = "application/merge-patch+json"
  local body = string.format('{"prefs": {"n": %d}, "tags": ["t%d"]}', i, i % 50)
  return wrk.format("PATCH", "/v1/me/data", headers, body)
end

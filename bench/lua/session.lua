-- A request made with one of a pool of pre-created sessions (BENCH_TOKENS), round robin:
-- GET /v1/me (BENCH_METHOD=GET) or PATCH /v1/me/data with a small merge patch (BENCH_METHOD=PATCH).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
common.install()

local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/v1/me"
local content_type = os.getenv("BENCH_CONTENT_TYPE") or "application/merge-patch+json"
local tokens
local i = 0
local n = 0

function init(args)
  tokens = common.load_tokens()
  i = (thread_id or 1) * 997
end

function request()
  i = i + 1
  n = n + 1
  local headers = {}
  common.auth_header(headers, tokens[(i % #tokens) + 1])
  local body = nil
  if method ~= "GET" then
    headers["Content-Type"] = content_type
    body = string.format('{"prefs": {"theme": "dark", "seen": %d}, "cart": {"items": %d}}', n, n % 7)
  end
  return wrk.format(method, path, headers, body)
end

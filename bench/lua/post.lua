-- POST to BENCH_PATH with no session (POST /v1/anonymous: every request makes a new account).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
common.install()

local path = os.getenv("BENCH_PATH") or "/v1/anonymous"
local req

function init(args)
  req = wrk.format("POST", path, {["Content-Length"] = "0"}, nil)
end

function request()
  return req
end

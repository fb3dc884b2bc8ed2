-- POST /v1/anonymous with a solved ALTCHA challenge in X-Anonid-Challenge, one per request from
-- a pool of precomputed solutions (BENCH_TOKENS, one base64 solution a line). Each solution is
-- accepted once, so none is sent twice; a pool that runs dry sends "exhausted", a 403 that the
-- runner counts as an error.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
common.install()

local path = os.getenv("BENCH_PATH") or "/v1/anonymous"
local solutions
local i = 0

function init(args)
  solutions = common.load_tokens()
end

function request()
  i = i + 1
  local solution = solutions[i] or "exhausted"
  return wrk.format("POST", path, {["Content-Length"] = "0", ["X-Anonid-Challenge"] = solution}, nil)
end

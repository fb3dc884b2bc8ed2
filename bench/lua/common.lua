-- Shared by every bench script: the session pool, pacing, response checks and the summary line.
-- Configured through environment variables set by bench/run.py (wrk passes its environment on).
local M = {}

local threads = {}
local counter = 0

-- Give each thread an id so pools are walked from different offsets.
function M.setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
  table.insert(threads, thread)
end

-- Session tokens, one per line (BENCH_TOKENS), and how they travel (BENCH_AUTH).
function M.load_tokens()
  local path = os.getenv("BENCH_TOKENS")
  local tokens = {}
  if path ~= nil and path ~= "" then
    for line in io.lines(path) do
      if line ~= "" then table.insert(tokens, line) end
    end
  end
  return tokens
end

function M.auth_header(headers, token)
  local auth = os.getenv("BENCH_AUTH") or "cookie"
  if auth == "bearer" then
    headers["Authorization"] = "Bearer " .. token
  else
    headers["Cookie"] = (os.getenv("BENCH_COOKIE") or "anonid_session") .. "=" .. token
  end
end

-- Optional pacing: each connection waits BENCH_DELAY_MS between requests (a steady, unsaturated
-- load for "p99 while something else runs" measurements).
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
function M.delay()
  return delay_ms
end

-- Optional stop after N responses per thread (memory measurement: an exact request count).
local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "0")
local seen = 0
function M.response(status, headers, body)
  seen = seen + 1
  if seen == stop_after then
    -- wrk's main thread sleeps for the whole -d; the runner interrupts it on this line.
    io.write("BENCH_STOPPED\n")
    io.flush()
    wrk.thread:stop()
  end
end

-- wrk takes slower paths when a script defines delay() or response(), so only define them
-- when they are wanted.
function M.install()
  setup, done = M.setup, M.done
  if delay_ms > 0 then delay = M.delay end
  if stop_after > 0 then response = M.response end
end

function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "mean_us": %.1f, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "bad_status": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status,
    e.timeout))
end

return M

-- wrk script for the Tidemark benchmark (see bench/run.sh, docs/performance.md).
--
-- Each wrk thread replays its own pre-generated pool file (bench/gen.py writes
-- "<len>\n<raw HTTP request>" records), so generating requests costs the load
-- generator nothing at run time and every sample it sends is unique.
--
-- Arguments (after `--`):
--   1 pool      file prefix; thread t reads <pool>.<t>
--   2 conns     connections per thread
--   3 duration  seconds of sending; afterwards connections only wait for their
--               in-flight response (drain), so "acknowledged" is exact
--   4 out       result JSON path (written by done()); <out>.drained.<t> marks a
--               drained thread so the caller can stop wrk early
--   5 starts    comma-separated first pool index per thread ("0,0")
--   6 cycle     1: wrap around the pool (trivial-endpoint ceiling), 0: stop when used up
--   7 pace_ms   0: send back-to-back; N: each connection waits ~N ms (uniform
--               0.5N..1.5N, first request 0..N) between a response and its next request
--   8 nthreads  wrk threads; each writes <out>.ready.<t> once its pool is loaded
--               and no thread sends before all are ready
--   9 ramp_s    spread the threads' start (and so their connects) over this many
--               seconds: wrk connects all of a thread's connections at once
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clk, bench_timespec_t *tp);
int usleep(unsigned int usec);
]]
local tsbuf = ffi.new("bench_timespec_t")
local function now()
  ffi.C.clock_gettime(1, tsbuf) -- CLOCK_MONOTONIC
  return tonumber(tsbuf.tv_sec) + tonumber(tsbuf.tv_nsec) * 1e-9
end

-- main state: the list of threads, for done()
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

-- thread state
local pool, npool, idx, granted = {}, 0, 1, 0
local conns, duration, cycle, pace_ms, nthreads
out = nil
local t0, deadline, stop_t
local idle, drained_marked, first_delays = 0, false, 0
ok, ok_before, sent, accepted_sum, last_resp, exhausted_at, next_index, idle_conns = 0, 0, 0, 0, 0, 0, 0, 0
t_start, t_stop = 0, 0
statuses = {}

function init(args)
  local prefix = args[1]
  conns = tonumber(args[2])
  duration = tonumber(args[3])
  out = args[4]
  local starts = {}
  for s in string.gmatch(args[5] or "0", "[^,]+") do table.insert(starts, tonumber(s)) end
  cycle = (args[6] == "1")
  pace_ms = tonumber(args[7] or "0")
  nthreads = tonumber(args[8] or "1")
  local ramp = tonumber(args[9] or "0")
  -- init() of thread t runs in wrk's main thread right before thread t starts, so
  -- sleeping here staggers the threads' connection bursts
  if ramp > 0 and tid > 0 then ffi.C.usleep(math.floor(ramp * 1e6 / nthreads)) end
  local start = starts[tid + 1] or 0
  local f = assert(io.open(prefix .. "." .. tid, "rb"))
  local i = 0
  while true do
    local line = f:read("*l")
    if not line then break end
    local len = tonumber(line)
    if i < start then
      f:seek("cur", len)
    else
      npool = npool + 1
      pool[npool] = f:read(len)
    end
    i = i + 1
  end
  f:close()
  next_index = start
  math.randomseed(1000 + tid)
  if npool == 0 then error("empty pool " .. prefix .. "." .. tid .. " from " .. start) end
  local m = io.open(out .. ".ready." .. tid, "w")
  m:write("1\n")
  m:close()
end

local function wait_all_ready()
  for _ = 1, 60000 do
    local n = 0
    for t = 0, nthreads - 1 do
      local f = io.open(out .. ".ready." .. t, "r")
      if f then n = n + 1; f:close() end
    end
    if n >= nthreads then return end
    ffi.C.usleep(5000)
  end
end

local function mark_drained()
  if drained_marked then return end
  drained_marked = true
  local f = io.open(out .. ".drained." .. tid, "w")
  if f then f:write("1\n"); f:close() end
end

function delay()
  local t = now()
  if not t0 then
    wait_all_ready()
    t = now()
    t0 = t; t_start = t; deadline = t + duration; stop_t = deadline
  end
  -- keep one pool slot for wrk's own verification call of request() on thread 0
  local room = cycle or (granted < npool - 1)
  if t < deadline and room then
    if pace_ms > 0 then
      local d
      if first_delays < conns then
        first_delays = first_delays + 1
        d = math.random() * pace_ms
      else
        d = pace_ms * (0.5 + math.random())
      end
      if t + d / 1000 < deadline then
        granted = granted + 1
        return d
      end
      -- this connection's next request would fall after the deadline: it is done
    else
      granted = granted + 1
      return 0
    end
  end
  if t < deadline and not room and not cycle and exhausted_at == 0 then
    exhausted_at = t
    stop_t = t
  end
  idle = idle + 1
  idle_conns = idle
  if idle >= conns then mark_drained() end
  return 86400000
end

function request()
  local r = pool[idx]
  if not r then r = pool[npool] end
  idx = idx + 1
  if cycle and idx > npool then idx = 1 end
  sent = sent + 1
  next_index = next_index + 1
  return r
end

function response(status, headers, body)
  local t = now()
  statuses[status] = (statuses[status] or 0) + 1
  if status >= 200 and status < 300 then
    ok = ok + 1
    if t <= stop_t then ok_before = ok_before + 1 end
    local a = string.match(body, '"accepted":(%d+)')
    if a then accepted_sum = accepted_sum + tonumber(a) end
  end
  last_resp = t
  t_stop = stop_t
end

-- main state: aggregate and write JSON
local function enc(v)
  local ty = type(v)
  if ty == "table" then
    local parts, is_arr = {}, (#v > 0)
    if is_arr then
      for _, x in ipairs(v) do table.insert(parts, enc(x)) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    for k, x in pairs(v) do table.insert(parts, string.format("%q", tostring(k)) .. ":" .. enc(x)) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif ty == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return string.format("%.17g", v)
  elseif ty == "boolean" then return tostring(v)
  elseif ty == "nil" then return "null"
  else return string.format("%q", tostring(v)) end
end

function done(summary, latency, requests)
  local per = {}
  for _, th in ipairs(threads) do
    local st = {}
    local s = th:get("statuses")
    if type(s) == "table" then for k, v in pairs(s) do st[tostring(k)] = v end end
    table.insert(per, {
      tid = th:get("tid"), ok = th:get("ok"), ok_before = th:get("ok_before"),
      sent = th:get("sent"), accepted_sum = th:get("accepted_sum"),
      t_start = th:get("t_start"), t_stop = th:get("t_stop"), last_resp = th:get("last_resp"),
      exhausted_at = th:get("exhausted_at"), next_index = th:get("next_index"),
      idle_conns = th:get("idle_conns"), statuses = st,
    })
  end
  local lat = {}
  for _, p in ipairs({ 50, 90, 99, 99.9 }) do lat["p" .. tostring(p)] = latency:percentile(p) end
  local res = {
    wrk = {
      duration_us = summary.duration, requests = summary.requests, bytes = summary.bytes,
      errors = { connect = summary.errors.connect, read = summary.errors.read,
                 write = summary.errors.write, status = summary.errors.status,
                 timeout = summary.errors.timeout },
    },
    latency_us = { mean = latency.mean, stdev = latency.stdev, max = latency.max, min = latency.min,
                   p50 = lat.p50, p90 = lat.p90, p99 = lat.p99, p999 = lat["p99.9"] },
    threads = per,
  }
  local f = assert(io.open(threads[1]:get("out"), "w"))
  f:write(enc(res))
  f:close()
end

-- wrk script: POST Zuora-like callouts, each with a unique Zuora-Notification-Id.
--
-- Arguments (after `--`): run id, seconds of load, Authorization header value.
-- After the given seconds each connection stops sending (delay() holds it back), so when wrk
-- ends a second or two later nothing is in flight: every request sent was answered and
-- counted, and "2xx answers == rows stored" can be checked exactly.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } zs_timespec;
int clock_gettime(int clk_id, zs_timespec *tp);
]]
local ts = ffi.new("zs_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads = {}
local run, stop_at, auth, thread_id, counter = "run", 0, nil, 0, 0
local body = '{"SubscriptionNumber":"A-S00000042","AccountId":"2c92a0f96c1ee5a5016c1f2bb0b7","'
  .. 'AccountNumber":"A00000042","Version":"3","EventType":"SubscriptionCustomFieldsChanged",'
  .. '"SupportTier__c":"Gold","SeatOverride__c":"25"}'

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  run = args[1] or "run"
  stop_at = now() + tonumber(args[2] or "10")
  auth = args[3]
  thread_id = wrk.thread:get("id") or 0
end

function request()
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["Zuora-Notification-Id"] = string.format("%s-%d-%d", run, thread_id, counter),
    ["Zuora-Request-Id"] = string.format("%s%dr%d", run, thread_id, counter),
  }
  if auth then headers["Authorization"] = auth end
  return wrk.format("POST", nil, headers, body)
end

function delay()
  if now() >= stop_at then return 3600000 end
  return 0
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "non_2xx": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end

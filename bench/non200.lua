-- wrk script for the gateway benchmark: POSTs an encode request and counts every
-- answer that is not 200. wrk itself counts only statuses >= 400 as errors, so a 202
-- (queued, not run) would otherwise pass as throughput.
-- Each wrk thread has its own Lua state: counts live in per-thread globals and
-- done() sums them over the threads collected in setup().

wrk.method = "POST"
wrk.body = os.getenv("SY_BENCH_BODY") or '{"items": [{"text": "The quick brown fox jumps over the lazy dog."}]}'
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non200 = 0
  by_status = {}
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    by_status[status] = (by_status[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total, statuses = 0, {}
  for _, thread in ipairs(threads) do
    total = total + thread:get("non200")
    for status, n in pairs(thread:get("by_status")) do
      statuses[status] = (statuses[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(statuses) do
    parts[#parts + 1] = string.format('"%d": %d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'SWITCHYARD_WRK {"requests": %d, "duration_us": %d, "non200": %d, "non200_by_status": {%s}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, total, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end

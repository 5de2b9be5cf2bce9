-- wrk script: POST one JSON body per request, cycling through a file of bodies
-- (one body per line). Arguments after `--`: BODIES_FILE [TOKEN|-] [MAX_REQUESTS_PER_THREAD]
-- With BODIES_FILE `GET`, every request is a plain GET of the URL (a server's floor).
-- Each thread stops after sending MAX_REQUESTS_PER_THREAD requests (0 = no cap), so a run
-- is bounded by wrk's --duration and by request count. (No response() callback: having
-- one makes wrk hand every response to Lua, which costs a third of its throughput.)

local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local bodies = {}
local n = 0
local i = 0
local sent = 0
local cap = 0
local get_only = false

function init(args)
  cap = tonumber(args[3] or "0") or 0
  if args[1] == "GET" then
    get_only = true
    return
  end
  for line in io.lines(args[1]) do
    if #line > 0 then
      n = n + 1
      bodies[n] = line
    end
  end
  if n == 0 then
    error("no request bodies in " .. args[1])
  end
  if args[2] and args[2] ~= "-" and args[2] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[2]
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  -- threads start at different places of the list
  i = ((tid or 0) * 7919) % n
end

function request()
  sent = sent + 1
  if cap > 0 and sent >= cap then
    wrk.thread:stop()
  end
  if get_only then
    return wrk.format("GET")
  end
  i = i % n + 1
  return wrk.format(nil, nil, nil, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end

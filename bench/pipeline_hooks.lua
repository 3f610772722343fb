-- wrk script: POST one signed GitLab Pipeline Hook per request, each with a new pipeline id.
-- Arguments (after `--`): the hook token, the GitLab project id, its path, the first pipeline id.
-- done() prints one line starting with "WRK " holding the run's figures as JSON.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  token, project_path = args[1], args[3]
  -- GitLab sends a number; a local repository's id is text, sent as a JSON string
  project_id = tonumber(args[2]) and args[2] or string.format('"%s"', args[2])
  next_id = tonumber(args[4] or "1000000") + thread_number * 100000000
  headers = {
    ["Content-Type"] = "application/json",
    ["X-Gitlab-Event"] = "Pipeline Hook",
    ["X-Gitlab-Token"] = token,
  }
end

function request()
  next_id = next_id + 1
  -- its times as GitLab writes them: a success always has finished_at
  local now = os.time()
  local body = string.format(
    '{"object_kind":"pipeline","object_attributes":{"id":%d,"ref":"main","tag":false,' ..
    '"sha":"%040x","status":"success","created_at":"%s","finished_at":"%s"},' ..
    '"project":{"id":%s,"path_with_namespace":"%s"}}',
    next_id, next_id, os.date("!%Y-%m-%d %H:%M:%S UTC", now - 180), os.date("!%Y-%m-%d %H:%M:%S UTC", now),
    project_id, project_path)
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  if status >= 300 and not told then  -- say once per thread why a hook was refused
    told = true
    io.stderr:write(string.format("REFUSED %d %s\n", status, body))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%d,"duration_us":%d,"not_2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end

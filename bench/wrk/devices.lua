-- wrk script: what ESP8266 devices send, one STA MAC per request.
--
--   MACS=0     a fresh MAC on every request: a fleet's first update
--   MACS=1000  1,000 devices asking in turn: a known fleet
--   RUN        this wrk run's number (0-255): with MACS=0, every run's MACs
--              are its own, so that a later run's "fresh" devices are not
--              the devices an earlier run added (which, downloading again,
--              would come back on their old image and be held back: 304s)
--   THREADS    wrk's -t (default 2), so that MACS devices are shared out
--   DEVICE=0   no device headers at all: AutoConnect's catalog loop
--
-- Each request also reports a sketch MD5 of its own, as a device running
-- a build otabox does not know does: none is taken for a device that came
-- back on its old image (which otabox holds back after two tries).
local macs = tonumber(os.getenv("MACS") or "0")
local run = tonumber(os.getenv("RUN") or "0") % 256
local threads = tonumber(os.getenv("THREADS") or "2")
local device = os.getenv("DEVICE") ~= "0"
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local n = 0

function request()
  n = n + 1
  if not device then
    return wrk.format("GET", wrk.path)
  end
  local k
  if macs > 0 then
    local per = math.max(math.floor(macs / threads), 1)
    k = tid * per + (n % per)
  else
    k = n
  end
  -- 5C:<run>:<thread>:<k, 24 bits>; the known fleet is the same in every run.
  local hi, mid = tid, run
  if macs > 0 then
    hi, mid = 0xAA, 0xCF
  end
  local mac = string.format("5C:%02X:%02X:%02X:%02X:%02X", mid, hi, math.floor(k / 65536) % 256, math.floor(k / 256) % 256, k % 256)
  local h = {
    ["User-Agent"] = "ESP8266-http-Update",
    ["x-ESP8266-STA-MAC"] = mac,
    ["x-ESP8266-AP-MAC"] = mac,
    ["x-ESP8266-free-space"] = "4194304",
    ["x-ESP8266-sketch-size"] = "373940",
    ["x-ESP8266-sketch-md5"] = string.format("%08x%08x%08x%08x", tid, n, k, 12345),
    ["x-ESP8266-chip-size"] = "4194304",
    ["x-ESP8266-sdk-version"] = "2.2.2-dev(38a443e)",
    ["x-ESP8266-mode"] = "sketch",
  }
  return wrk.format("GET", wrk.path, h)
end

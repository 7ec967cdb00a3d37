-- wrk script for scripts/bench --wrk: 5000 distinct tracker events (5 sites, 60 paths,
-- a few browsers, thousands of forwarded client IPs), sent round-robin.
local agents = {
 "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
 "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
 "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
 "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
}
local names = {"load","load","load","load","nav","hidden","hidden","visible","ping","ping"}
local reqs = {}
math.randomseed(42)  -- the same requests every run
for i = 1, 5000 do
  local body = string.format('{"n":"%s","l":"https://site%d.example/page/%d","r":"https://www.google.com/","lt":800,"fb":90,"sw":1920,"sh":1080,"tz":"Europe/Berlin","pr":1,"pd":24}', names[math.random(#names)], math.random(5), math.random(60))
  local headers = {["Host"]="127.0.0.1", ["Content-Type"]="text/plain", ["User-Agent"]=agents[math.random(#agents)], ["X-Forwarded-For"]=string.format("10.%d.%d.%d", math.random(255), math.random(255), math.random(254))}
  reqs[i] = wrk.format("POST", "/p", headers, body)
end
local n = 0
request = function() n = n % #reqs + 1; return reqs[n] end

-- wrk script: each request places an order of one unit of a random bench product, for a
-- random bench customer. BENCH_CUSTOMERS is "token,addressId;..."; BENCH_PRODUCTS "id;...".
local function split(text, separator)
  local parts = {}
  for part in string.gmatch(text, "([^" .. separator .. "]+)") do
    parts[#parts + 1] = part
  end
  return parts
end

local customers = {}
for _, pair in ipairs(split(os.getenv("BENCH_CUSTOMERS"), ";")) do
  local fields = split(pair, ",")
  customers[#customers + 1] = { token = fields[1], address = fields[2] }
end
local products = split(os.getenv("BENCH_PRODUCTS"), ";")

request = function()
  local customer = customers[math.random(#customers)]
  local product = products[math.random(#products)]
  local body = '{"addressId":"' .. customer.address .. '","items":[{"productId":"'
    .. product .. '","quantity":1}]}'
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer " .. customer.token,
    ["Content-Type"] = "application/json",
  }, body)
end

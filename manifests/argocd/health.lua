-- Argo CD health of a switchyard.dev resource, from the Ready condition the operator writes.
-- Progressing until the operator has seen the current generation; then Ready True is
-- Healthy, Ready False is Degraded (Invalid, or a Pool whose lease expired).
hs = {status = "Progressing", message = "waiting for the Switchyard operator"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local gen = obj.metadata.generation
if gen ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < gen then
  hs.message = "the operator has not seen generation " .. gen .. " yet"
  return hs
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    hs.message = (c.reason or "") .. ": " .. (c.message or "")
    if c.status == "True" then
      hs.status = "Healthy"
    elseif c.reason == "WorkersStarting" then
      hs.status = "Progressing"  -- a Pool's reserved workers on their way
    elseif c.status == "False" then
      hs.status = "Degraded"
    end
  end
end
return hs

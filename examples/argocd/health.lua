-- Argo CD health of a packetcapture.dev/PacketCapture, with kstatus semantics: the
-- controller reports status.observedGeneration and the Ready, Reconciling and Stalled
-- conditions. Installed by argocd-cm-patch.yaml; samples in health-tests/.
local hs = {}
local status = obj.status or {}

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. generation
  return hs
end

local conditions = {}
for _, condition in ipairs(status.conditions or {}) do
  conditions[condition.type] = condition
end
local function isTrue(conditionType)
  return conditions[conditionType] ~= nil and conditions[conditionType].status == "True"
end
local readyMessage = conditions.Ready and conditions.Ready.message

if isTrue("Stalled") then
  hs.status = "Degraded"
  hs.message = conditions.Stalled.message
  return hs
end
if isTrue("Reconciling") then
  hs.status = "Progressing"
  hs.message = conditions.Reconciling.message
  return hs
end
if isTrue("Ready") then
  hs.status = "Healthy"
  hs.message = readyMessage
  return hs
end
if status.phase == "Completed" then
  hs.status = "Healthy"
  hs.message = readyMessage or "Capture completed"
  return hs
end
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = readyMessage or "Capture failed"
  return hs
end
hs.status = "Progressing"
if readyMessage ~= nil and readyMessage ~= "" then
  hs.message = "Waiting for the capture to become Ready: " .. readyMessage
else
  hs.message = "Waiting for the capture to become Ready"
end
return hs

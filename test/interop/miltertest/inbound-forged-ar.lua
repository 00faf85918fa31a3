-- miltertest → sello: inbound mail from an SPF-permitted client gets Received-SPF and sello's
-- Authentication-Results inserted; the forged Authentication-Results claiming sello's authserv-id
-- is deleted (SMFIR_CHGHEADER with an empty value); a foreign A-R stays.
conn = mt.connect("inet:" .. port .. "@127.0.0.1")
if conn == nil then error("mt.connect() failed") end
if mt.conninfo(conn, "good.example.com", "192.0.2.25") ~= nil then error("mt.conninfo() failed") end
if mt.helo(conn, "good.example.com") ~= nil then error("mt.helo() failed") end
if mt.mailfrom(conn, "<carol@pass.example>") ~= nil then error("mt.mailfrom() failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("MAIL: unexpected reply") end
if mt.rcptto(conn, "<bob@example.net>") ~= nil then error("mt.rcptto() failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("RCPT: unexpected reply") end
if mt.header(conn, "Authentication-Results", "other.example; spf=none") ~= nil then error("header failed") end
if mt.header(conn, "Authentication-Results", "sello.test; dkim=pass header.d=bank.example") ~= nil then error("header failed") end
if mt.header(conn, "From", "Carol <carol@pass.example>") ~= nil then error("header failed") end
if mt.header(conn, "Subject", "miltertest inbound") ~= nil then error("header failed") end
if mt.eoh(conn) ~= nil then error("mt.eoh() failed") end
if mt.bodystring(conn, "Hello.\r\n") ~= nil then error("mt.bodystring() failed") end
if mt.eom(conn) ~= nil then error("mt.eom() failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("EOM: unexpected reply") end
if not mt.eom_check(conn, MT_HDRINSERT, "Received-SPF") then error("no Received-SPF inserted") end
if not mt.eom_check(conn, MT_HDRINSERT, "Authentication-Results") then error("no Authentication-Results inserted") end
results = mt.getheader(conn, "Authentication-Results", 0)
if results == nil or not string.find(results, "sello.test;", 1, true) or not string.find(results, "spf=pass", 1, true) then
  error("unexpected Authentication-Results: " .. tostring(results))
end
if not mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results") then error("the forged Authentication-Results was not deleted") end
if mt.eom_check(conn, MT_HDRINSERT, "DKIM-Signature") then error("inbound mail must not be signed") end
mt.echo("inbound checked: " .. results)
mt.disconnect(conn)

-- miltertest (OpenDKIM's independent milter client) → sello's milter listener: an authenticated
-- sender ({auth_authen}) from an untrusted address gets one DKIM-Signature inserted, nothing else.
-- Run by test/interop/miltertest.test.ts with -D port=<sello's milter port>.
conn = mt.connect("inet:" .. port .. "@127.0.0.1")
if conn == nil then error("mt.connect() failed") end
mt.macro(conn, SMFIC_CONNECT, "j", "mta.example", "{daemon_name}", "submission")
if mt.conninfo(conn, "client.example.com", "198.51.100.7") ~= nil then error("mt.conninfo() failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("connect: unexpected reply") end
if mt.helo(conn, "client.example.com") ~= nil then error("mt.helo() failed") end
mt.macro(conn, SMFIC_MAIL, "i", "MT0001", "{auth_authen}", "alice")
if mt.mailfrom(conn, "<alice@example.org>") ~= nil then error("mt.mailfrom() failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("MAIL: unexpected reply") end
if mt.rcptto(conn, "<bob@example.net>") ~= nil then error("mt.rcptto() failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("RCPT: unexpected reply") end
if mt.header(conn, "From", "Alice <alice@example.org>") ~= nil then error("mt.header(From) failed") end
if mt.header(conn, "To", "bob@example.net") ~= nil then error("mt.header(To) failed") end
if mt.header(conn, "Subject", "miltertest signing") ~= nil then error("mt.header(Subject) failed") end
if mt.header(conn, "Date", "Fri, 04 Dec 2026 10:00:00 +0000") ~= nil then error("mt.header(Date) failed") end
if mt.eoh(conn) ~= nil then error("mt.eoh() failed") end
if mt.bodystring(conn, "Signed by sello, checked by miltertest.\r\n") ~= nil then error("mt.bodystring() failed") end
if mt.eom(conn) ~= nil then error("mt.eom() failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("EOM: unexpected reply") end
if not mt.eom_check(conn, MT_HDRINSERT, "DKIM-Signature") then error("no DKIM-Signature inserted") end
signature = mt.getheader(conn, "DKIM-Signature", 0)
if signature == nil or not string.find(signature, "d=example.org;", 1, true) or not string.find(signature, "s=mt;", 1, true) then
  error("unexpected DKIM-Signature: " .. tostring(signature))
end
if mt.eom_check(conn, MT_HDRINSERT, "Authentication-Results") then error("an authenticated submission must not be checked") end
if mt.eom_check(conn, MT_HDRCHANGE) or mt.eom_check(conn, MT_HDRDELETE) then error("no header may be changed") end
mt.echo("signed: " .. signature)
mt.disconnect(conn)

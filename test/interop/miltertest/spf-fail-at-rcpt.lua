-- miltertest → sello: SPF fail for the client's address is refused at RCPT with SMFIR_REPLYCODE
-- (the engine's 550 5.7.23); a postmaster@ recipient is exempt (RFC 5321 §4.5.1).
conn = mt.connect("inet:" .. port .. "@127.0.0.1")
if conn == nil then error("mt.connect() failed") end
if mt.conninfo(conn, "bad.example.com", "203.0.113.66") ~= nil then error("mt.conninfo() failed") end
if mt.helo(conn, "bad.example.com") ~= nil then error("mt.helo() failed") end
if mt.mailfrom(conn, "<mallory@fail.example>") ~= nil then error("mt.mailfrom() failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("MAIL: unexpected reply") end
if mt.rcptto(conn, "<bob@example.net>") ~= nil then error("mt.rcptto() failed") end
if mt.getreply(conn) ~= SMFIR_REPLYCODE then error("RCPT: expected SMFIR_REPLYCODE") end
if mt.rcptto(conn, "<postmaster@example.net>") ~= nil then error("mt.rcptto(postmaster) failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("RCPT postmaster: expected SMFIR_CONTINUE") end
mt.echo("spf fail refused at RCPT")
mt.disconnect(conn)

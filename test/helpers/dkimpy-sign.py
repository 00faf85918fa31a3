#!/usr/bin/python3
# Independent DKIM signer for tests: dkimpy (Debian python3-dkim) signs a message, so sello's
# verifier and Exim can be tested against signatures sello did not make.
# Input on stdin: JSON {message (base64), domain, selector, privateKey (PKCS#1 PEM for RSA, base64
# 32-byte seed for Ed25519), algorithm, canonicalize ["relaxed","simple"], headers?, identity?,
# length?}. Output on stdout: the DKIM-Signature header field, CRLF-terminated, nothing else.
# Must not: touch DNS or the message itself (the caller prepends the header).
# Run with /usr/bin/python3: dkimpy is only installed for the Debian system Python.

import base64
import json
import sys

import dkim


def main():
    request = json.load(sys.stdin)
    message = base64.b64decode(request['message'])
    headers = request.get('headers')
    identity = request.get('identity')
    signature = dkim.sign(
        message,
        request['selector'].encode('ascii'),
        request['domain'].encode('ascii'),
        request['privateKey'].encode('ascii'),
        identity=identity.encode('utf-8') if identity else None,
        canonicalize=tuple(part.encode('ascii') for part in request.get('canonicalize', ['relaxed', 'simple'])),
        signature_algorithm=request.get('algorithm', 'rsa-sha256').encode('ascii'),
        include_headers=[name.encode('ascii') for name in headers] if headers else None,
        length=bool(request.get('length', False)),
        linesep=b'\r\n',
    )
    sys.stdout.buffer.write(signature)


if __name__ == '__main__':
    main()

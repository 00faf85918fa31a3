#!/usr/bin/python3
# Independent DKIM verifier for tests: dkimpy (Debian python3-dkim) checks EVERY DKIM-Signature
# header of the message on stdin, looking keys up in the test DNS server given on the command line.
# With --arc it validates the message's ARC chain instead (dkim.arc_verify, RFC 8617 §5.2).
# Owns: the JSON report {"signatures": [{domain, selector, algorithm, ok, error?, keyBits?}]}, or
# with --arc {"arc": {cv, reason, sets: [{instance, cv, asValid, amsValid, domain, selector}]}}.
# Must not: use the system resolver, or judge policy (it reports per signature, nothing more).
# Run with /usr/bin/python3: dkimpy is only installed for the Debian system Python.

import argparse
import json
import logging
import sys

import dkim
import dkim.util
import dns.exception
import dns.rdatatype
import dns.resolver


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.errors = []

    def emit(self, record):
        if record.levelno >= logging.ERROR:
            self.errors.append(record.getMessage())


def make_dnsfunc(host, port):
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    resolver.cache = None

    def dnsfunc(name, timeout=5):
        qname = name.decode('ascii') if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(qname, dns.rdatatype.TXT, raise_on_no_answer=False, lifetime=timeout)
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoNameservers as e:  # SERVFAIL and friends: temporary, RFC 6376 §6.1.2
            raise dkim.DnsTimeoutError('no usable answer (SERVFAIL?): {0}'.format(e))
        except dns.exception.Timeout as e:
            raise dkim.DnsTimeoutError('timeout: {0}'.format(e))
        for rrset in answer.response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                # RFC 6376 §3.6.2.2: the character-strings of one TXT record are concatenated.
                return b''.join(list(rrset.items)[0].strings)
        return None

    return dnsfunc


def text(value):
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


def verify_arc(message, dnsfunc, args):
    # dkimpy's chain result: pass, fail, none, or None for a chain an earlier seal reported as failed.
    logger = logging.getLogger('dkimpy-arc-verify')
    logger.propagate = False
    verifier = dkim.ARC(message, logger=logger, minkey=args.minkey, timeout=args.timeout)
    try:
        cv, results, reason = verifier.verify(dnsfunc=dnsfunc)
    except dkim.DKIMException as e:
        cv, results, reason = dkim.CV_Fail, [], '{0}: {1}'.format(type(e).__name__, e)
    sets = [
        {
            'instance': entry.get('instance'),
            'cv': text(entry.get('cv', b'')),
            'asValid': bool(entry.get('as-valid')),
            'amsValid': bool(entry.get('ams-valid')),
            'domain': text(entry.get('as-domain', b'')),
            'selector': text(entry.get('as-selector', b'')),
        }
        for entry in results
    ]
    return {'cv': None if cv is None else text(cv), 'reason': text(reason), 'sets': sets}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--dns-host', required=True)
    parser.add_argument('--dns-port', type=int, required=True)
    parser.add_argument('--timeout', type=float, default=5.0)
    parser.add_argument('--minkey', type=int, default=1024)
    parser.add_argument('--arc', action='store_true', help='validate the ARC chain instead of the DKIM signatures')
    args = parser.parse_args()

    message = sys.stdin.buffer.read()
    dnsfunc = make_dnsfunc(args.dns_host, args.dns_port)
    if args.arc:
        json.dump({'arc': verify_arc(message, dnsfunc, args)}, sys.stdout)
        sys.stdout.write('\n')
        return

    logger = logging.getLogger('dkimpy-verify')
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    collect = Collect()
    logger.addHandler(collect)

    verifier = dkim.DKIM(message, logger=logger, minkey=args.minkey, timeout=args.timeout)
    signatures = [value for name, value in verifier.headers if name.lower() == b'dkim-signature']
    results = []
    for index, header in enumerate(signatures):
        entry = {'domain': '', 'selector': '', 'algorithm': '', 'ok': False}
        try:
            tags = dkim.util.parse_tag_value(header)
            entry['domain'] = text(tags.get(b'd', b''))
            entry['selector'] = text(tags.get(b's', b''))
            entry['algorithm'] = text(tags.get(b'a', b''))
        except Exception:  # malformed tag list: verify() reports it below
            pass
        collect.errors = []
        try:
            entry['ok'] = bool(verifier.verify(idx=index, dnsfunc=dnsfunc))
            if not entry['ok']:
                entry['error'] = collect.errors[-1] if collect.errors else 'signature did not verify'
        except dkim.DKIMException as e:
            entry['error'] = '{0}: {1}'.format(type(e).__name__, e)
        keysize = getattr(verifier, 'keysize', None)
        if entry['ok'] and keysize:
            entry['keyBits'] = keysize
        results.append(entry)

    json.dump({'signatures': results}, sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()

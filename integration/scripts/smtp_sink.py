#!/usr/bin/env python3
"""A real SMTP server for the integration tests: accepts mail on 127.0.0.1 and stores it as files.

    python3 smtp_sink.py --port N --dir DIR

Each accepted message is stored byte for byte as DIR/<seq>-<first recipient>.eml (written to a
hidden temporary name, then renamed, so a reader never sees a partial file). <seq> is a
zero-padded counter that goes on from the highest one already in DIR, so a sink restarted on
the same directory never overwrites earlier mail and file names sort in arrival order.

Recipients (RCPT TO) decide the outcome:
  - a local part starting with `bounce`: 550 5.1.1 mailbox unavailable (permanent failure);
  - a local part starting with `flaky`: 451 4.3.0 try again later the first 3 times that exact
    address is given (counted per address over the process's life), accepted after that;
  - anything else: 250 OK.
AUTH (PLAIN, LOGIN) is offered without TLS and any credentials are accepted, so a mailer
configured with a user and password can send too; STARTTLS is not offered.

Prints `ready` on stdout once listening; logs each message's recipients (and each rejection)
on stderr; exits with status 0 on SIGTERM or SIGINT.
"""

import argparse
import asyncio
import logging
import os
import re
import signal
import sys

try:
    from aiosmtpd.smtp import SMTP, AuthResult
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"smtp_sink: cannot import aiosmtpd ({e}): run scripts/services.sh or pip install aiosmtpd")

FLAKY_FAILURES = 3

# aiosmtpd's own logger warns about its internals on every AUTH (a deprecated attribute it sets
# itself); keep its errors only.
logging.getLogger("mail.log").setLevel(logging.ERROR)


def log(msg):
    print(f"[smtp-sink] {msg}", file=sys.stderr, flush=True)


def sanitise(address):
    name = re.sub(r"[^A-Za-z0-9@._+-]", "_", address or "unknown")
    return name[:100] or "unknown"


class Sink:
    def __init__(self, directory):
        self.dir = directory
        self.seq = 0
        for name in os.listdir(directory):
            m = re.match(r"^(\d+)-.*\.eml$", name)
            if m:
                self.seq = max(self.seq, int(m.group(1)))
        self.seen = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.rsplit("@", 1)[0].lower()
        if local.startswith("bounce"):
            log(f"rejected {address}: 550")
            return "550 5.1.1 mailbox unavailable"
        if local.startswith("flaky"):
            n = self.seen.get(address, 0) + 1
            self.seen[address] = n
            if n <= FLAKY_FAILURES:
                log(f"deferred {address} ({n}/{FLAKY_FAILURES}): 451")
                return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.seq += 1
        first = envelope.rcpt_tos[0] if envelope.rcpt_tos else "unknown"
        name = f"{self.seq:06d}-{sanitise(first)}.eml"
        tmp = os.path.join(self.dir, f".{name}.tmp")
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.dir, name))
        log(f"received {name} from {envelope.mail_from} to {', '.join(envelope.rcpt_tos)} ({len(content)} bytes)")
        return "250 OK"


def accept_any_login(server, session, envelope, mechanism, auth_data):
    login = getattr(auth_data, "login", b"") or b""
    log(f"AUTH {mechanism} as {login.decode('utf-8', 'replace')!r} accepted")
    return AuthResult(success=True)


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    handler = Sink(args.dir)
    loop = asyncio.get_running_loop()

    def factory():
        return SMTP(
            handler,
            hostname="parley-smtp-sink",
            enable_SMTPUTF8=True,
            authenticator=accept_any_login,
            auth_require_tls=False,
            auth_required=False,
        )

    server = await loop.create_server(factory, host=args.host, port=args.port, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log(f"listening on {args.host}:{args.port}, storing mail in {args.dir}")
    print("ready", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()
    log("stopped")


if __name__ == "__main__":
    asyncio.run(main())

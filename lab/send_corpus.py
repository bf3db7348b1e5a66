"""Send the shared corpus's real-world emails through a site's gateways, as a journaling mail server would.

    python3 lab/send_corpus.py --recipient archive@archive-gw.example.com --corpus ../shared/corpus/mime-samples 198.18.10.10 ...

Each file goes, in its wire form (CRLF lines), to one gateway in turn, over
STARTTLS. Files with a line longer than SMTP's 998 octets are left out: a
relay may fold such lines, and then the archived bytes differ from the file.
Prints one JSON object: how many were sent through each gateway and the
sha256 of each message sent, for reconcile's ``expect``.
"""

import argparse
import hashlib
import json
import smtplib
import ssl
import sys
from pathlib import Path

MAX_LINE = 998


def wire_form(raw):
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--recipient", required=True, help="the site's journal address")
    parser.add_argument("--corpus", required=True, type=Path, help="a folder of .eml files")
    parser.add_argument("--sender", default="journal@customer.example")
    parser.add_argument("gateways", nargs="+", help="addresses of the site's gateways")
    args = parser.parse_args()
    files = sorted(args.corpus.glob("*.eml"))
    if not files:
        sys.exit(f"send_corpus: no .eml files in {args.corpus}")
    messages = [wire_form(path.read_bytes()) for path in files]
    messages = [raw for raw in messages if max(len(line) for line in raw.split(b"\r\n")) <= MAX_LINE]
    # The lab's gateways have self-signed certificates: encrypt, without verifying them.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sent = {gateway: 0 for gateway in args.gateways}
    for index, gateway in enumerate(args.gateways):
        batch = messages[index::len(args.gateways)]
        try:
            with smtplib.SMTP(gateway, 25, timeout=30) as client:
                client.starttls(context=context)
                for raw in batch:
                    client.sendmail(args.sender, [args.recipient], raw)
                    sent[gateway] += 1
        except (smtplib.SMTPException, OSError) as exc:
            sys.exit(f"send_corpus: {gateway} took {sent[gateway]} of {len(batch)} messages, then: {exc}")
    print(json.dumps({"sent": sent, "sha256": [hashlib.sha256(raw).hexdigest() for raw in messages],
                      "left_out": len(files) - len(messages)}))


if __name__ == "__main__":
    main()

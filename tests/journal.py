"""An Exchange envelope journal report, as Exchange and Microsoft 365 send them to a journaling mailbox:
a wrapper whose text part lists the real envelope (Bcc, expanded lists and forwards included), with the
original message attached as message/rfc822."""

ORIGINAL = (
    "From: Carol Finance <carol@example.com>\r\n"
    "To: Dave <dave@example.com>, sales-team@example.com\r\n"
    "Cc: erin@example.com\r\n"
    "Subject: Confidential pricing for Nightingale\r\n"
    "Date: Tue, 03 Mar 2026 09:15:00 +0000\r\n"
    "Message-ID: <orig-1@example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "The floor price is 42 per unit.\r\n"
)


def journal_report(envelope, original=ORIGINAL, exchange2003=False, tag=""):
    """The report (bytes, CRLF); ``tag`` makes its Message-IDs and subject unique: orig-<tag>, "Nightingale <tag>"."""
    if tag:
        envelope, original = (text.replace("orig-1@", f"orig-{tag}@").replace("Nightingale", f"Nightingale {tag}") if text else text
                              for text in (envelope, original))
    marker = "Content-Identifier: exjournalreport\r\n" if exchange2003 else "X-MS-Journal-Report:\r\n"
    attached = ("--b1\r\nContent-Type: message/rfc822\r\n\r\n" + original) if original else ""
    return (
        "From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@example.com>\r\n"
        "To: archive@archive-gw.example.com\r\n"
        "Subject: Confidential pricing for Nightingale\r\n"
        "Date: Tue, 03 Mar 2026 09:15:02 +0000\r\n"
        "Message-ID: <journal-1@example.com>\r\n"
        + marker
        + "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
        "\r\n"
        "--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        + envelope
        + attached
        + "\r\n--b1--\r\n"
    ).encode()


ENVELOPE = (
    "Sender: carol@example.com\r\n"
    "Subject: Confidential pricing for Nightingale\r\n"
    "Message-Id: <orig-1@example.com>\r\n"
    "To: dave@example.com\r\n"
    "To: frank@example.com, Expanded: sales-team@example.com\r\n"
    "To: grace@example.com, Expanded: sales-team@example.com\r\n"
    "Cc: erin@example.com\r\n"
    "Bcc: heidi.hidden@example.com\r\n"
    "To: ivan@partner.example, Forwarded: dave@example.com\r\n"
    "\r\n"
)

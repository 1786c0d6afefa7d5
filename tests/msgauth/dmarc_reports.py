"""DMARC aggregate reports for tests: the XML of RFC 7489 Appendix C and the mail carrying it
(RFC 7489 §7.2.1.1), as gzip, zip or plain XML attachments."""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Sequence
from email.message import EmailMessage

#: The example aggregate report of the DMARC specification (valid under RFC 7489 Appendix C).
EXAMPLE = b"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>acme.com</org_name>
    <email>noreply-dmarc-support@acme.com</email>
    <extra_contact_info>http://acme.com/dmarc/support</extra_contact_info>
    <report_id>9391651994964116463</report_id>
    <date_range>
      <begin>1335571200</begin>
      <end>1335657599</end>
    </date_range>
  </report_metadata>
  <policy_published>
    <domain>example.com</domain>
    <adkim>r</adkim>
    <aspf>r</aspf>
    <p>none</p>
    <sp>none</sp>
    <pct>100</pct>
  </policy_published>
  <record>
    <row>
      <source_ip>72.150.241.94</source_ip>
      <count>2</count>
      <policy_evaluated>
        <disposition>none</disposition>
        <dkim>fail</dkim>
        <spf>pass</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>example.com</header_from>
    </identifiers>
    <auth_results>
      <dkim>
        <domain>example.com</domain>
        <result>fail</result>
        <human_result></human_result>
      </dkim>
      <spf>
        <domain>example.com</domain>
        <result>pass</result>
      </spf>
    </auth_results>
  </record>
</feedback>
"""

#: (source_ip, count, disposition, dkim, spf)
Row = tuple[str, int, str, str, str]


def report_xml(
    domain: str = "example.org",
    *,
    org: str = "reporter.example",
    report_id: str = "r-1",
    begin: int = 1_790_000_000,
    end: int = 1_790_086_399,
    rows: Sequence[Row] = (("192.0.2.1", 3, "none", "pass", "pass"),),
    p: str = "none",
) -> bytes:
    """A report on ``domain`` with one record per row."""
    records = "".join(
        f"<record><row><source_ip>{ip}</source_ip><count>{count}</count>"
        f"<policy_evaluated><disposition>{disposition}</disposition><dkim>{dkim}</dkim>"
        f"<spf>{spf}</spf></policy_evaluated></row>"
        f"<identifiers><header_from>{domain}</header_from></identifiers>"
        f"<auth_results><dkim><domain>{domain}</domain><selector>s1</selector>"
        f"<result>{dkim}</result></dkim><spf><domain>{domain}</domain><scope>mfrom</scope>"
        f"<result>{spf}</result></spf></auth_results></record>"
        for ip, count, disposition, dkim, spf in rows
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><feedback><version>1.0</version>'
        f"<report_metadata><org_name>{org}</org_name><email>dmarc@{org}</email>"
        f"<report_id>{report_id}</report_id><date_range><begin>{begin}</begin>"
        f"<end>{end}</end></date_range></report_metadata>"
        f"<policy_published><domain>{domain}</domain><adkim>r</adkim><aspf>r</aspf>"
        f"<p>{p}</p><sp>{p}</sp><pct>100</pct></policy_published>{records}</feedback>"
    ).encode()


def gzipped(xml: bytes) -> bytes:
    return gzip.compress(xml, mtime=0)


def zipped(xml: bytes, name: str = "report.xml") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, xml)
    return buffer.getvalue()


def report_message(
    xml: bytes,
    kind: str = "gzip",
    *,
    to: str = "dmarc-reports@example.org",
    sender: str = "dmarc@reporter.example",
    name: str = "reporter.example!example.org!1790000000!1790086399",
) -> bytes:
    """A report mail (RFC 7489 §7.2.1.1): a short text part and the report attached as
    ``kind`` (``gzip``, ``zip`` or ``xml``)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"Report Domain: {to.partition('@')[2]} Submitter: reporter.example"
    message["Message-ID"] = "<report-1@reporter.example>"
    message.set_content("This is an aggregate report from reporter.example.\n")
    if kind == "gzip":
        message.add_attachment(gzipped(xml), maintype="application", subtype="gzip",
                               filename=f"{name}.xml.gz")
    elif kind == "zip":
        message.add_attachment(zipped(xml, f"{name}.xml"), maintype="application",
                               subtype="zip", filename=f"{name}.zip")
    else:
        message.add_attachment(xml, maintype="text", subtype="xml", filename=f"{name}.xml")
    return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

"""The outbound spool: durable queue, routing (MX), delivery over SMTP, retries and bounces."""

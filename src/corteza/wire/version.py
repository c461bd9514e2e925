"""Protocol version carried by every response of ours (header ``X-Corteza-Protocol``)."""

PROTOCOL_VERSION = "1.0"
PROTOCOL_HEADER = "X-Corteza-Protocol"

"""`tcpstack drill`: packetdrill-language scripts run against the Linux kernel and against tcpstack."""

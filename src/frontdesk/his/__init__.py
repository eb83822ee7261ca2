"""The HIS bridge: the `HisGateway` port, its HTTP adapter, the protocol and its signing,
the event poller and the conformance kit (see docs/his-bridge.md)."""

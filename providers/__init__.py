"""Upstream adapters: each turns an `UpstreamCall` into scores behind one interface."""

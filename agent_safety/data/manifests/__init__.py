"""Sha256 manifests of the upstream files the project reads (package data, loaded by agent_safety.data.fetch)."""

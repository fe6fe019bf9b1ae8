"""Who may call: API key records, status-page sessions and attempt throttles (each in
memory and in Redis)."""

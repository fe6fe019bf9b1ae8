"""Where a request goes: deployment order, failover, hedges, breakers, health, latency
models, retry budgets, tier choice and admission under `server.max_in_flight`."""

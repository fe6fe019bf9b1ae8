"""What a request costs and who may spend it: billing, prices, budgets, rate limits,
quotas (in memory and in Redis), usage counters and events, the PostgreSQL ledger."""

"""The HTTP edge: routes, the rerank pipeline, the Cohere wire schema, auth, admin reports
and the OpenAPI document."""

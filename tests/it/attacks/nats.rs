//! A plain NATS client publishing on `herald.>` in cluster mode gets only what an HTTP
//! publish would: the same header rules, body limit and routing.

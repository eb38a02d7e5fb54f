-- The W3C traceparent of the span that wrote the event (NULL when tracing was off or the
-- request not sampled): the relay's publish joins that trace, however late it comes.
ALTER TABLE outbox ADD COLUMN traceparent text;

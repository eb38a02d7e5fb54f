-- The W3C traceparent of the span that created the notification (NULL when tracing was off
-- or the event's trace not sampled): its SSE send, on whichever instance, joins that trace.
ALTER TABLE notifications ADD COLUMN traceparent text;

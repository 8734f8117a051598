-- The trace context of the submission that created a job (OpenTelemetry's
-- W3C `traceparent`/`tracestate` carrier, as a JSON object of strings), so
-- that every attempt's span, on whichever node runs it, continues the trace
-- that submitted the job. NULL when the submitter traced nothing.
-- A nullable column without a default: adding it rewrites no rows.
ALTER TABLE job_status ADD COLUMN trace_context jsonb
    CHECK (trace_context IS NULL OR jsonb_typeof(trace_context) = 'object');

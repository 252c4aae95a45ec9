-- A month's chargeback in Athena, by the rules of the scheduler's `chargeback` job
-- (functions/scheduler/src/chargeback.rs, shared/src/rollup.rs), over the table of audit_events.sql.
-- For a trail larger than one function run can read in its 15 minutes: the same sums, the same rows.
--
-- The rules, as the job applies them:
-- - a request's outcome is its `final` record, or the `incomplete` one the hourly digest job writes for a
--   request that never got one; only provider routes' (not `admin`);
-- - each event once, by event_id (an object written twice holds the same ids);
-- - the month's events by their `time`, read from the month's partitions and the first three hours of the
--   next (events land in the hour they are written, seconds to minutes after they happen);
-- - a request refused without reaching the provider (decision other than allow, no usage) is counted as
--   refused and charged nothing; a request's tokens are its usage's, total at least input + output;
-- - cost is summed in micro-dollars, each event rounded, so the totals equal the JSON report's.
--
-- Replace 2026 / 11 (and the next month's 2026 / 12) for the month wanted.
WITH window AS (
  SELECT * FROM llm_gateway_audit_events
  WHERE (year = '2026' AND month = '11')
     OR (year = '2026' AND month = '12' AND day = '01' AND hour IN ('00', '01', '02'))
),
outcomes AS (
  SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY time) AS copy
  FROM window
  WHERE coalesce(record, 'final') IN ('final', 'incomplete')
    AND provider IN ('azure-openai', 'bedrock-claude', 'gemini')
    AND admin IS NULL
    AND substr(time, 1, 7) = '2026-11'
)
SELECT
  coalesce(principal.department, '(none)')                                           AS department,
  coalesce(principal.username, '')                                                   AS username,
  coalesce(principal.subject, '')                                                    AS subject,
  provider,
  coalesce(model, '')                                                                AS model,
  count_if(NOT (decision <> 'allow' AND usage IS NULL))                              AS requests,
  count_if(decision <> 'allow' AND usage IS NULL)                                    AS refused,
  sum(coalesce(usage.input_tokens, 0))                                               AS input_tokens,
  sum(coalesce(usage.cached_input_tokens, 0))                                        AS cached_input_tokens,
  sum(coalesce(usage.output_tokens, 0))                                              AS output_tokens,
  sum(greatest(coalesce(usage.total_tokens, 0),
               coalesce(usage.input_tokens, 0) + coalesce(usage.output_tokens, 0)))  AS total_tokens,
  sum(CASE WHEN usage IS NOT NULL THEN round(coalesce(cost_usd, 0) * 1000000) ELSE 0 END) / 1e6 AS cost_usd,
  count_if(usage IS NOT NULL AND cost_usd IS NULL)                                   AS unpriced_requests,
  count_if(usage.estimated)                                                          AS estimated_requests,
  count_if(record = 'incomplete')                                                    AS incomplete_requests
FROM outcomes
WHERE copy = 1
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 4, 5;

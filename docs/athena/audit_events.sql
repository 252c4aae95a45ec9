-- Athena / Glue table over the audit trail the audit-writer function writes:
--   s3://<audit bucket>/audit/year=YYYY/month=MM/day=DD/hour=HH/<batch>.jsonl.gz
-- One JSON object per line, schema: schemas/audit-event.schema.json. Partition projection means no
-- MSCK REPAIR / crawler is needed as new hours arrive. Replace <audit-bucket> before running.
-- The partition is the hour the writer wrote the object (what makes the hourly digests complete), not the
-- events' `time`, which is seconds to minutes earlier: for the events of one hour, read that partition and
-- the next and filter on `time`. The signed digests (digests/ in the same bucket) are outside LOCATION.
-- Requests whose final never came have one record = 'incomplete' (outcome 'unknown', status 0), written by
-- the hourly audit-digest job.
-- A retried SQS batch rewrites its own object, but a batch split differently on retry can repeat an
-- event: count DISTINCT event_id where exactness matters. Counting requests, count final records only.

CREATE EXTERNAL TABLE IF NOT EXISTS llm_gateway_audit_events (
  schema_version    int,
  event_id          string,
  `time`            string,
  request_id        string,
  record            string,   -- authorized | accepted | final | incomplete (NULL in schema_version 1: final)
  decision          string,
  reason            string,
  status            int,
  outcome           string,
  principal         struct<subject:string, username:string, department:string, client_id:string, auth_method:string>,
  credential_source string,
  provider          string,
  operation         string,
  model             string,
  stream            boolean,
  transport         string,
  bytes_in          bigint,
  bytes_out         bigint,
  latency           struct<total_ms:bigint, upstream_ms:bigint, first_byte_ms:bigint>,
  region            string,   -- the provider region the request went to (schema_version 5), where known
  usage             struct<input_tokens:bigint, output_tokens:bigint, total_tokens:bigint,
                           cached_input_tokens:bigint, cache_write_tokens:bigint, estimated:boolean>,
  cost_usd          double,
  cost_status       string,   -- priced | unknown_model | no_model | no_usage (requests' outcomes only)
  source_ip         string,
  user_agent        string,
  request_sha256    string,
  -- Final records of routes that record bodies: where the request's encrypted bodies are
  -- (s3://<audit-bucket>/<bodies.key>); key NULL and error set when they could not be stored.
  -- `gateway-audit bodies --request-id <id> --key <bodies.key>` decrypts them (needs kms:Decrypt).
  bodies            struct<key:string, request:struct<bytes:bigint, truncated:boolean>,
                           response:struct<bytes:bigint, truncated:boolean>, error:string>,
  -- Directory changes (provider 'admin', schema_version 3): who changed which user how; the acting
  -- administrator is `principal`. Attribute names only, never values.
  admin             struct<actor:string, action:string, target:string, changed:array<string>, source:string>,
  -- Requests under a budget (schema_version 4): the usage counters their worst case was reserved on
  -- before forwarding, in tokens and micro-dollars; the audit writer settles it to the real usage.
  budget            struct<counters:array<string>, tokens:bigint, cost_micros:bigint>
)
PARTITIONED BY (year string, month string, day string, hour string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES ('ignore.malformed.json' = 'false')
STORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'
OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'
LOCATION 's3://<audit-bucket>/audit/'
TBLPROPERTIES (
  'projection.enabled'         = 'true',
  'projection.year.type'       = 'integer', 'projection.year.range'  = '2025,2100', 'projection.year.digits'  = '4',
  'projection.month.type'      = 'integer', 'projection.month.range' = '1,12',      'projection.month.digits' = '2',
  'projection.day.type'        = 'integer', 'projection.day.range'   = '1,31',      'projection.day.digits'   = '2',
  'projection.hour.type'       = 'integer', 'projection.hour.range'  = '0,23',      'projection.hour.digits'  = '2',
  'storage.location.template'  = 's3://<audit-bucket>/audit/year=${year}/month=${month}/day=${day}/hour=${hour}/',
  'classification'             = 'json',
  'compressionType'            = 'gzip'
);

-- Example: tokens per department and model for one day (chargeback).
-- SELECT principal.department, model, sum(usage.input_tokens) AS input, sum(usage.output_tokens) AS output
-- FROM llm_gateway_audit_events
-- WHERE year = '2026' AND month = '11' AND day = '25' AND decision = 'allow'
--   AND coalesce(record, 'final') = 'final'
-- GROUP BY 1, 2 ORDER BY 3 DESC;
--
-- Every request has one final record, or one incomplete record once the hourly job has checked its hour;
-- requests still waiting for either (the last hour or two):
-- SELECT request_id FROM llm_gateway_audit_events WHERE year = '2026' AND month = '11' AND day = '25'
-- GROUP BY request_id HAVING count_if(coalesce(record, 'final') IN ('final', 'incomplete')) = 0;
--
-- Requests whose bodies were cut by the bound, or could not be stored (KMS or S3 failed):
-- SELECT request_id, bodies.key, bodies.request.truncated, bodies.response.truncated, bodies.error
-- FROM llm_gateway_audit_events WHERE year = '2026' AND month = '11' AND day = '25'
--   AND record = 'final' AND (bodies.request.truncated OR bodies.response.truncated OR bodies.error IS NOT NULL);

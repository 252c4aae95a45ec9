//! The admin API's file endpoints: upload tickets for HR files (the provisioner takes them from
//! there), the current users as an Appendix 2 file, and the provisioning jobs' reports.

use aws_sdk_s3::presigning::PresigningConfig;
use gateway_shared::provisioning::{export, rows::COLUMNS};
use serde_json::{json, Value};

use crate::{AdminApi, Answer, ApiError};

/// Where the provisioner looks for files to apply and to plan, and where its reports go (the
/// provisioner's own constants, which this function does not link).
const APPLY_PREFIX: &str = "incoming/";
const DRY_RUN_PREFIX: &str = "dry-run/";
const REPORT_PREFIX: &str = "reports/provisioning/";
/// An upload's file name when the request names none.
const DEFAULT_UPLOAD_NAME: &str = "hr.csv.age";

/// `POST /users/csv/upload`: a presigned PUT into the provisioning bucket, under `incoming/` (or
/// `dry-run/`), with a key no other upload has.
/// Answers the ticket and the key it is for.
pub async fn upload(api: &AdminApi, body: Value, now: u64) -> Result<(Answer, String), ApiError> {
    let Value::Object(fields) = body else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let mut filename = DEFAULT_UPLOAD_NAME.to_string();
    let mut dry_run = false;
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("filename", Value::String(f)) => filename = f,
            ("filename", Value::Null) => {}
            ("dry_run", Value::Bool(d)) => dry_run = d,
            ("dry_run", Value::Null) => {}
            (other, _) => {
                return Err(ApiError::invalid(vec![(
                    other.to_string(),
                    format!("{other} is not a field of an upload request (filename, dry_run)"),
                )]))
            }
        }
    }
    // Only the name's safe characters reach the key; the rest of the key is the API's own.
    let safe: String = filename
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(100)
        .collect();
    let safe = safe.trim_start_matches('.');
    let safe = if safe.is_empty() {
        "upload.csv.age"
    } else {
        safe
    };
    let prefix = if dry_run {
        DRY_RUN_PREFIX
    } else {
        APPLY_PREFIX
    };
    let key = format!("{prefix}{now}-{}-{safe}", uuid::Uuid::new_v4());
    let ttl = api.config.upload_ttl;
    let presigning = PresigningConfig::expires_in(ttl).map_err(ApiError::internal)?;
    let request = api
        .s3
        .put_object()
        .bucket(&api.config.provisioning_bucket)
        .key(&key)
        .presigned(presigning)
        .await
        .map_err(|e| ApiError::internal(aws_sdk_s3::error::DisplayErrorContext(e)))?;
    let headers: serde_json::Map<String, Value> = request
        .headers()
        .map(|(name, value)| (name.to_string(), Value::String(value.to_string())))
        .collect();
    let answer = Answer::json(
        201,
        json!({
            "url": request.uri(),
            "method": "PUT",
            "key": key,
            "expires_at": gateway_shared::audit::clock::rfc3339_from_millis(now + ttl.as_millis() as u64),
            "headers": headers,
        }),
    );
    Ok((answer, key))
}

/// `GET /users/csv/download`: the provisioned users in the Appendix 2 columns, formula-safe, UTF-8
/// with a BOM (Excel reads it as UTF-8) or CP932 on request.
pub async fn download(api: &AdminApi, encoding: Option<&str>) -> Result<Answer, ApiError> {
    let cp932 = match encoding.map(|e| e.to_ascii_lowercase()) {
        None => false,
        Some(e) if e == "utf-8" || e == "utf8" => false,
        Some(e) if e == "cp932" || e == "shift_jis" => true,
        Some(_) => {
            return Err(ApiError::invalid(vec![(
                "encoding".into(),
                "encoding is utf-8 or cp932".into(),
            )]))
        }
    };
    let users = api
        .directory
        .users(api.config.directory.department_ids().into_iter())
        .await?;
    let mut text = export::line(&COLUMNS);
    for user in users.values() {
        // Accounts provisioning does not manage (no start_date) are not HR rows.
        let mut cells = crate::users::current_cells(user);
        if cells[6].is_empty() {
            continue;
        }
        // Dates go out as HR files write them (YYYY/MM/DD); the directory keeps them ISO.
        for date in &mut cells[6..8] {
            *date = date.replace('-', "/");
        }
        text.push_str(&export::line(&cells));
    }
    let (body, content_type) = if cp932 {
        let (bytes, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&text);
        if unmappable {
            return Err(ApiError::new(
                422,
                "unprocessable",
                "a user's data has characters CP932 cannot hold; download UTF-8 instead",
            ));
        }
        (bytes.into_owned(), "text/csv; charset=shift_jis")
    } else {
        let mut bytes = "\u{feff}".as_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        (bytes, "text/csv; charset=utf-8")
    };
    Ok(Answer {
        status: 200,
        body,
        content_type,
        headers: vec![(
            "content-disposition",
            "attachment; filename=\"users.csv\"".into(),
        )],
    })
}

/// `GET /users/sync/status`: the latest provisioning runs, newest first, from their JSON reports.
pub async fn sync_status(api: &AdminApi, limit: Option<&str>) -> Result<Answer, ApiError> {
    let limit = match limit {
        None => 10,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=50).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(vec![(
                    "limit".into(),
                    "limit is a number from 1 to 50".into(),
                )])
            })?,
    };
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = api
            .s3
            .list_objects_v2()
            .bucket(&api.config.reports_bucket)
            .prefix(REPORT_PREFIX)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| ApiError::internal(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key())
                .filter(|k| k.ends_with(".json"))
                .map(str::to_string),
        );
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    // Report names start with the run's time in milliseconds: the newest sort last.
    keys.sort();
    let mut jobs = Vec::new();
    for key in keys.iter().rev().take(limit) {
        let object = api
            .s3
            .get_object()
            .bucket(&api.config.reports_bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| ApiError::internal(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let bytes = object
            .body
            .collect()
            .await
            .map_err(ApiError::internal)?
            .into_bytes();
        let report: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
        let finished = key
            .strip_prefix(REPORT_PREFIX)
            .and_then(|name| name.split('-').next())
            .and_then(|millis| millis.parse::<u64>().ok())
            .map(gateway_shared::audit::clock::rfc3339_from_millis);
        jobs.push(json!({
            "report_key": key,
            "csv_report_key": key.strip_suffix(".json").map(|base| format!("{base}.csv")),
            "source_key": report["source_key"],
            "dry_run": report["dry_run"],
            "finished_at": finished,
            "today": report["today"],
            "encoding": report["encoding"],
            "file_error": report["file_error"],
            "counts": report["counts"],
        }));
    }
    Ok(Answer::json(200, json!({ "jobs": jobs })))
}

/// `GET /reports/chargeback?month=YYYY-MM&format=json|csv`: the month's chargeback report as the
/// scheduler wrote it (`reports/chargeback/<month>/`).
pub async fn chargeback(
    api: &AdminApi,
    month: Option<String>,
    format: Option<&str>,
) -> Result<Answer, ApiError> {
    let month = month.ok_or_else(|| ApiError::bad_request("month (YYYY-MM) is required"))?;
    let month = crate::departments::month(Some(month), 0)?;
    let (extension, content_type) = match format.unwrap_or("json") {
        "json" => ("json", "application/json"),
        "csv" => ("csv", "text/csv; charset=utf-8"),
        _ => return Err(ApiError::bad_request("format is json or csv")),
    };
    let key = format!("reports/chargeback/{month}/chargeback.{extension}");
    let bytes = report_object(api, &key).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no chargeback report for {month} yet: the scheduler writes it on the 1st for the month before"
        ))
    })?;
    let mut answer = Answer::json(200, Value::Null);
    answer.body = bytes;
    answer.content_type = content_type;
    if extension == "csv" {
        answer.headers.push((
            "content-disposition",
            format!("attachment; filename=\"chargeback-{month}.csv\""),
        ));
    }
    Ok(answer)
}

/// An object of the reports bucket, or None when there is none at `key`.
pub async fn report_object(api: &AdminApi, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let object = api
        .s3
        .get_object()
        .bucket(&api.config.reports_bucket)
        .key(key)
        .send()
        .await;
    let object = match object {
        Ok(object) => object,
        Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
            return Ok(None)
        }
        Err(error) => {
            return Err(ApiError::internal(aws_sdk_s3::error::DisplayErrorContext(
                error,
            )))
        }
    };
    let bytes = object
        .body
        .collect()
        .await
        .map_err(ApiError::internal)?
        .into_bytes();
    Ok(Some(bytes.to_vec()))
}

//! What every part of the queue transport needs from SQS: the call counter the benchmarks read, and
//! telling a queue that is gone (swept, deleted) from any other failure, since both sides act on that.

use std::sync::atomic::{AtomicU64, Ordering};

static SQS_CALLS: AtomicU64 = AtomicU64::new(0);

/// SQS API calls made by the queue transport and the dispatcher in this process (for benchmarks).
pub fn sqs_calls() -> u64 {
    SQS_CALLS.load(Ordering::Relaxed)
}

pub(super) fn count_call() {
    SQS_CALLS.fetch_add(1, Ordering::Relaxed);
}

pub(super) fn sqs_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
    error: &aws_sdk_sqs::error::SdkError<E, R>,
) -> String {
    aws_sdk_sqs::error::DisplayErrorContext(error).to_string()
}

pub(super) fn is_missing_queue(message: &str) -> bool {
    message.contains("NonExistentQueue") || message.contains("QueueDoesNotExist")
}

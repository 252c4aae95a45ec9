//! The `queue` transport: the route puts a [`RequestEnvelope`] on its provider's request queue and waits
//! on its execution environment's own reply queue; the dispatcher function (in the VPC that reaches the
//! provider) calls the provider and answers with [`ReplyMessage`]s ([`relay_response`]).
//!
//! - One reply queue per execution environment (created at first use, tagged with a heartbeat at most once
//!   a minute, recreated under a new name if it was swept), so replies never compete across environments.
//!   Within an environment, one poller demultiplexes replies to waiting requests by request id.
//! - Replies are reordered by sequence number and locked to the first dispatch attempt that answers, so a
//!   retried dispatch never interleaves with a failed one.
//! - The status must arrive before the deadline ([`QueueConfig::response_timeout`]) or the client gets a
//!   504; a stream then may run as long as messages keep coming within [`QueueConfig::idle_timeout`].
//! - Streams cost a bounded number of SQS calls: the dispatcher batches chunks for a short window.
//! - Bodies over [`PayloadSettings::inline_max_bytes`] travel through the payload bucket.
//!
//! One private module per concern: `route` (the [`QueueTransport`]), `reply_queue` (the environment's
//! queue, its poller and the waiting requests), `assembler` (reordering, locking to one attempt),
//! `payload` (inline or S3 bodies), `dispatch` (the dispatcher's [`ReplySender`] and [`relay_response`]),
//! `sweep` (deleting the queues of gone environments) and `sqs` (the SQS calls they make).
//!
//! SQS and the payload bucket are reached only through [`MessageQueue`] and [`PayloadStore`], narrow
//! traits the AWS clients implement, so each side's branches can be tested with in-memory fakes
//! (`crate::testing`, feature `test-util`).
//!
//! [`RequestEnvelope`]: super::envelope::RequestEnvelope
//! [`ReplyMessage`]: super::envelope::ReplyMessage

mod assembler;
mod dispatch;
mod payload;
mod reply_queue;
mod route;
mod sqs;
mod sweep;

// The proxy, the dispatcher and the local stack name these as `transport::queue::…`; re-exporting them
// here keeps those paths stable while the modules behind them stay free to move.
pub use dispatch::{relay_response, ReplySendError, ReplySender};
pub use payload::{resolve_payload, PayloadSettings, PayloadStore, DEFAULT_INLINE_MAX_BYTES};
pub use reply_queue::{HEARTBEAT_TAG, REPLY_QUEUE_TAG};
pub use route::{QueueConfig, QueueTransport};
pub use sqs::{sqs_calls, MessageQueue, QueueError, QueuePage, ReceivedMessage};
pub use sweep::sweep_reply_queues;

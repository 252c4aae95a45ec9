//! Reassembly on the route side: standard queues may reorder and a retried dispatch may answer too, so
//! replies are put back in sequence order and locked to the first attempt whose sequence 0 arrives (a
//! retry never interleaves with a failed attempt).

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::reply_queue::Delivery;
use crate::transport::envelope::{Payload, ReplyError, ReplyHead, ReplyMessage};

/// What the reader gets next, in order.
pub(super) enum ReplyEvent {
    Head(ReplyHead),
    Data(Payload),
    End,
    Error(ReplyError),
}

/// Orders replies by sequence number, locked to the first attempt whose sequence 0 arrives.
#[derive(Default)]
pub(super) struct Assembler {
    attempt: Option<String>,
    next_seq: u64,
    pending: HashMap<String, BTreeMap<u64, ReplyMessage>>,
    ready: VecDeque<ReplyEvent>,
}

impl Assembler {
    fn push(&mut self, message: ReplyMessage) {
        if self.attempt.as_ref().is_some_and(|a| *a != message.attempt) {
            return;
        }
        if self.attempt.is_none() && message.seq == 0 {
            self.attempt = Some(message.attempt.clone());
            self.pending
                .retain(|attempt, _| *attempt == message.attempt);
        }
        self.pending
            .entry(message.attempt.clone())
            .or_default()
            .insert(message.seq, message);
        let Some(attempt) = self.attempt.clone() else {
            return;
        };
        while let Some(message) = self
            .pending
            .get_mut(&attempt)
            .and_then(|m| m.remove(&self.next_seq))
        {
            self.next_seq += 1;
            if let Some(head) = message.head {
                self.ready.push_back(ReplyEvent::Head(head));
            }
            if let Some(data) = message.data {
                self.ready.push_back(ReplyEvent::Data(data));
            }
            if let Some(error) = message.error {
                self.ready.push_back(ReplyEvent::Error(error));
            }
            if message.end {
                self.ready.push_back(ReplyEvent::End);
            }
        }
    }

    /// Takes what the poller delivered. A lost reply queue ends the answer after what is already in
    /// order, whichever attempt it was locked to: it comes from this side, not from a dispatch.
    pub(super) fn accept(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Reply(message) => self.push(message),
            Delivery::Lost(error) => self.ready.push_back(ReplyEvent::Error(error)),
        }
    }

    /// The next event in sequence, if it has arrived.
    pub(super) fn next_event(&mut self) -> Option<ReplyEvent> {
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(attempt: &str, seq: u64, data: &str, end: bool) -> ReplyMessage {
        ReplyMessage {
            request_id: "r".into(),
            attempt: attempt.into(),
            seq,
            head: (seq == 0).then(|| ReplyHead {
                status: 200,
                headers: vec![],
            }),
            data: Some(Payload::inline(data.as_bytes())),
            end,
            error: None,
        }
    }

    fn drain(assembler: &mut Assembler) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(event) = assembler.next_event() {
            out.push(match event {
                ReplyEvent::Head(h) => format!("head {}", h.status),
                ReplyEvent::Data(p) => String::from_utf8(p.decode_inline().unwrap()).unwrap(),
                ReplyEvent::End => "end".into(),
                ReplyEvent::Error(e) => format!("error {}", e.message),
            });
        }
        out
    }

    #[test]
    fn reorders_by_sequence() {
        let mut assembler = Assembler::default();
        assembler.push(message("a", 2, "c", true));
        assembler.push(message("a", 1, "b", false));
        assert!(
            drain(&mut assembler).is_empty(),
            "nothing before sequence 0"
        );
        assembler.push(message("a", 0, "a", false));
        assert_eq!(drain(&mut assembler), ["head 200", "a", "b", "c", "end"]);
    }

    #[test]
    fn locks_to_the_first_attempt_that_answers() {
        let mut assembler = Assembler::default();
        assembler.push(message("retry", 1, "late", true));
        assembler.push(message("first", 0, "x", false));
        assembler.push(message("retry", 0, "y", false));
        assembler.push(message("first", 1, "z", true));
        assert_eq!(drain(&mut assembler), ["head 200", "x", "z", "end"]);
    }

    #[test]
    fn a_lost_reply_queue_ends_the_answer_after_what_is_in_order() {
        let mut assembler = Assembler::default();
        assembler.accept(Delivery::Reply(message("first", 0, "x", false)));
        assembler.accept(Delivery::Reply(message("first", 2, "late", true)));
        assembler.accept(Delivery::Lost(ReplyError {
            kind: crate::transport::envelope::ReplyErrorKind::Connect,
            message: "gone".into(),
        }));
        assert_eq!(drain(&mut assembler), ["head 200", "x", "error gone"]);
    }
}

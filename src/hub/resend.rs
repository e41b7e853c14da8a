//! Resending: a logged message delivered again, to every live subscriber or to one, its
//! deliveries added to those it has.

use thiserror::Error;

use super::Hub;
use super::attempt::Round;
use super::message::MessageId;
use super::routing::Route;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResendError {
    #[error("message {0} is not in the log (it may have been evicted or cleared)")]
    UnknownMessage(MessageId),
    #[error("{0:?} is not a live subscriber")]
    UnknownSubscriber(String),
    #[error(
        "message {id} would hold more than {max} deliveries, all the log keeps; publish it again instead of resending it"
    )]
    TooManyDeliveries { id: MessageId, max: usize },
    #[error(
        "message {id} holds {held} bytes (its payload, deliveries and the answers kept), more than its share of the log's bytes ({max}, --log-max-bytes); publish it again instead of resending it"
    )]
    TooManyBytes {
        id: MessageId,
        held: usize,
        max: usize,
    },
    #[error("the hub is shutting down")]
    ShuttingDown,
}

impl Hub {
    /// Delivers a logged message again, to every live subscriber or to one. The resends
    /// are added to the message's deliveries; returns how many were queued.
    pub fn resend(&self, id: MessageId, to: Option<&str>) -> Result<usize, ResendError> {
        if self.is_stopping() {
            return Err(ResendError::ShuttingDown);
        }
        // A point read by id when the message is only in the store: well under a
        // millisecond, so not worth a thread hop.
        let message = self
            .find_message(id)
            .ok_or(ResendError::UnknownMessage(id))?;
        let route = match to {
            Some(address) => Route::one(
                self.recipient(address)
                    .ok_or_else(|| ResendError::UnknownSubscriber(address.to_owned()))?,
            ),
            // Those its topic reaches now, as a publish of it would.
            None => self.route(message.topic.as_ref()),
        };
        // One message cannot take the whole log: the newest is never evicted, so without
        // this, resending it over and over would grow the log without end. Its records and
        // its bytes are bounded here; its bytes also where each attempt is kept
        // (`MessageRecord::push_attempt`), since attempts of resends already queued, and
        // their retries, land after this check.
        // A pinned message is outside the log's budgets: its share of them is its bound.
        let share = self.shared.log.usage().budget().share(message.is_pinned());
        let held = message.held();
        if held.records + route.len() > share.records {
            let max = share.records;
            return Err(ResendError::TooManyDeliveries { id, max });
        }
        if held.bytes > share.bytes {
            let (held, max) = (held.bytes, share.bytes);
            return Err(ResendError::TooManyBytes { id, held, max });
        }
        let refused = self.queue(&message, &route, Round::Resend);
        let queued = route.len() - refused.len();
        self.record_refused(&message, refused);
        self.trim_log();
        Ok(queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::fan_out::tests::{Held, hub_with, publish};
    use crate::hub::{Answer, Attempt, Exchange, Headers, HubConfig, Outcome};

    #[test]
    fn resending_one_message_cannot_grow_the_log_without_end() {
        let (hub, _held) = hub_with(200);
        let id = publish(&hub, "again and again").unwrap().id;
        let mut resent = 0;
        let refused = loop {
            match hub.resend(id, None) {
                Ok(_) => resent += 1,
                Err(err) => break err,
            }
            assert!(resent < 10_000, "resends were never refused");
        };
        let max = crate::hub::log::DELIVERY_BUDGET;
        assert_eq!(refused, ResendError::TooManyDeliveries { id, max });
        assert!(
            refused.to_string().contains("publish it again"),
            "{refused}"
        );
        assert_eq!(
            resent,
            max / 200 - 1,
            "every resend the budget allows was made"
        );
        assert!(hub.shared.log.usage().held().records <= max);
    }

    /// An attempt that kept a 64 KiB answer.
    fn answered(bytes: usize) -> Attempt {
        let answer = Answer {
            status: 200,
            body: vec![b'a'; bytes].into(),
            ..Answer::default()
        };
        Attempt {
            at: std::time::SystemTime::now(),
            outcome: Outcome::Delivered {
                status: 200,
                latency: std::time::Duration::ZERO,
            },
            exchange: Some(std::sync::Arc::new(Exchange {
                request_headers: Headers::from_pairs([("x-herald-message-id", "1")]),
                response: Some(answer),
                ..Exchange::default()
            })),
        }
    }

    #[test]
    fn past_its_byte_share_a_message_is_not_resent_and_keeps_lean_attempts() {
        let config = HubConfig {
            log_max_bytes: 256 * 1024,
            ..HubConfig::default()
        };
        let launcher = std::sync::Arc::new(std::sync::Arc::new(Held::default()));
        let hub = Hub::new(config, launcher);
        hub.subscribe("127.0.0.1:1024").unwrap();
        let id = publish(&hub, "answered at length").unwrap().id;
        let message = hub.message(id).unwrap();
        // Four resends queued before any attempt lands: each is allowed.
        for _ in 0..4 {
            assert_eq!(hub.resend(id, None), Ok(1));
        }
        for slot in 0..5 {
            message.push_attempt(slot, answered(64 * 1024));
        }
        let kept: Vec<bool> = message
            .deliveries()
            .iter()
            .map(|d| d.attempts[0].exchange.as_ref().unwrap().not_kept)
            .collect();
        // Three answers fit in 256 KiB with the rest; the fourth and fifth are kept lean.
        assert_eq!(kept, [false, false, false, true, true]);
        let lean = &message.deliveries()[4].attempts[0];
        let exchange = lean.exchange.as_deref().unwrap();
        assert_eq!(exchange.response.as_ref().map(|a| a.status), Some(200));
        assert!(exchange.response.as_ref().unwrap().body.is_empty());
        assert!(exchange.request_headers.as_text().is_empty());
        // Each resend's answer is kept lean now, so the message creeps up to its share,
        // a few hundred bytes a resend, and is refused there.
        let mut resends = 0;
        let refused = loop {
            match hub.resend(id, None) {
                Ok(_) => message.push_attempt(message.deliveries().len() - 1, answered(64 * 1024)),
                Err(err) => break err,
            }
            resends += 1;
            assert!(resends < 10_000, "resends were never refused");
        };
        assert!(
            message.held().bytes < 256 * 1024 + 1024,
            "{:?}",
            message.held()
        );
        assert!(
            matches!(refused, ResendError::TooManyBytes { max, .. } if max == 256 * 1024),
            "{refused}"
        );
        assert!(refused.to_string().contains("--log-max-bytes"), "{refused}");
        // A starred message's share is a hundredth of the budget.
        let share = hub.shared.log.usage().budget().share(true);
        assert_eq!(share.bytes, 256 * 1024 / crate::hub::MAX_PINNED);
    }
}

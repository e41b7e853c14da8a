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
        // this, resending it over and over would grow the log without end.
        // A pinned message is outside the log's budgets: its share of them is its bound.
        let budget = self.shared.log.usage().budget().records;
        let max = if message.is_pinned() {
            budget / super::MAX_PINNED
        } else {
            budget
        };
        if message.held().records + route.len() > max {
            return Err(ResendError::TooManyDeliveries { id, max });
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
    use crate::hub::fan_out::tests::{hub_with, publish};

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
}

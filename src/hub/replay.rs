//! Replaying a logged message: published again as a new message, edited or not, to every
//! subscriber its topic reaches or to one, linked to its original and back.

use bytes::Bytes;
use thiserror::Error;

use super::Hub;
use super::intake::{Accepted, Aim, PublishError, Published};
use super::message::{Draft, MessageId, MessageRecord, Source};
use super::topic::Topic;

/// What a replay changes; what is left `None` is the original's.
#[derive(Debug, Clone, Default)]
pub struct Edits {
    pub body: Option<Bytes>,
    /// A new content type; `Some(None)` sends it without one.
    pub content_type: Option<Option<String>>,
    /// A new topic; `Some(None)` sends it without one.
    pub topic: Option<Option<Topic>>,
    /// Only to this live subscriber (as registered or as shown), whatever the topic.
    pub to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplayError {
    #[error("message {0} is not in the log (it may have been pruned or cleared)")]
    UnknownMessage(MessageId),
    #[error("{0:?} is not a live subscriber")]
    UnknownSubscriber(String),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl Hub {
    /// Publishes message `id` again with `edits`, as a new message that names it as its
    /// original, and answers once the store has kept it (as an HTTP publish does).
    pub async fn replay(
        &self,
        id: MessageId,
        edits: Edits,
        source: Source,
    ) -> Result<Published, ReplayError> {
        let original = self
            .find_message(id)
            .ok_or(ReplayError::UnknownMessage(id))?;
        let (draft, aim) = self.replay_from(&original, edits)?;
        Ok(self.accept_when_ready(draft, source, aim).await?)
    }

    /// Like [`Hub::replay`], without waiting (the console): refused while the fan-out is
    /// a full backlog behind, and never reading the disk (a message that left memory is
    /// not found).
    pub fn replay_now(
        &self,
        id: MessageId,
        edits: Edits,
        source: Source,
    ) -> Result<Accepted, ReplayError> {
        let original = self.message(id).ok_or(ReplayError::UnknownMessage(id))?;
        let (draft, aim) = self.replay_from(&original, edits)?;
        Ok(self.accept_now(draft, source, aim)?)
    }

    /// The draft and aim of a replay of `original`: its payload, content type, forwarded
    /// headers and topic, as edited; a new trace.
    fn replay_from(
        &self,
        original: &MessageRecord,
        edits: Edits,
    ) -> Result<(Draft, Aim), ReplayError> {
        let to = match &edits.to {
            Some(address) => Some(
                self.recipient(address)
                    .ok_or_else(|| ReplayError::UnknownSubscriber(address.clone()))?,
            ),
            None => None,
        };
        let draft = Draft {
            body: edits.body.unwrap_or_else(|| original.body.clone()),
            content_type: edits
                .content_type
                .unwrap_or_else(|| original.content_type.clone()),
            headers: original.headers.clone(),
            trace: None,
            topic: edits.topic.unwrap_or_else(|| original.topic.clone()),
        };
        let aim = Aim {
            replay_of: Some(original.id),
            to,
        };
        Ok((draft, aim))
    }

    /// Tells the original of `message` (if it replays one, and memory still holds it) of
    /// its replay: done where a record is made, here or from a cluster's shared log.
    pub(super) fn link_replay(&self, message: &super::MessageRecord) {
        if let Some(original) = message.replay_of.and_then(|id| self.message(id)) {
            original.add_replay(message.id);
        }
    }
}

//! What a panel asks the app to do when it needs more than the hub and its own state: the
//! runtime, the files, other panels or the top bar. The app carries it out as soon as the
//! panel's UI code returns, within the same frame.

use std::net::SocketAddr;

use super::settings::Settings;

#[derive(Debug)]
pub(crate) enum Action {
    /// Show this in the top bar for a while.
    Notice(String),
    ExportLog,
    ImportLog,
    /// Forget the logged messages, in memory and in the store.
    ForgetHistory,
    LoadFile,
    AddTestSubscriber,
    RemoveTestSubscriber(u64),
    /// Serve here from now on.
    Listen(SocketAddr),
    ToggleTheme,
    OpenSettings,
    OpenTopics,
    OpenMatrix,
    OpenCluster,
    /// Select message `id` and open its delivery to `subscriber`: its attempt timeline.
    Inspect {
        id: crate::hub::MessageId,
        subscriber: String,
    },
    /// Start this burst on the runtime, and follow it in Compose.
    StartBurst(Box<crate::workbench::burst::BurstSpec>),
    /// Show the payloads of these two messages side by side.
    Compare(crate::hub::MessageId, crate::hub::MessageId),
    /// Deliver message `id` again, to every subscriber its topic reaches or to one.
    Resend {
        id: crate::hub::MessageId,
        to: Option<String>,
    },
    /// Star message `id`, or take its star away.
    Star {
        id: crate::hub::MessageId,
        starred: bool,
    },
    /// Open message `id` in Compose, to be edited and replayed.
    Replay(crate::hub::MessageId),
    /// Load message `id` (the last with `topic`) into Compose.
    Compose {
        id: crate::hub::MessageId,
        topic: String,
    },
    /// Put these settings in force; `bind` is theirs, parsed.
    ApplySettings(Settings, SocketAddr),
}

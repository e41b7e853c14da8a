//! Test subscribers: their ports have the hub's own edge, what they keep is copied and
//! budgeted, and they do not outlive a restart as someone else's port.

//! Limits that must never answer yes and do nothing, poison refused at the door, one
//! identity per cluster, and the small ones.

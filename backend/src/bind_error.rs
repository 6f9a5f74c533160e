//! The error of binding a back end's event channel, below both the xenbus
//! handshake that binds it and the ring-page connect error that wraps it.

/// Why an event channel could not be bound for a back end.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The hypervisor refused the binding.
    #[error(transparent)]
    Evtchn(#[from] xen_domain::event_channel::EvtchnError),
}

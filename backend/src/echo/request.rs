//! An echo request as the device logic sees it, whatever transport
//! carried it.

use vm_memory::VolatileSlice;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Nothing but answer (a pure event round trip).
    Ping,
    /// Sum the bytes of the data range.
    Sum,
    /// XOR every byte of the data range with `key`, in place; returns the
    /// sum of the new bytes. The range must be writable.
    Xor {
        /// The XOR key.
        key: u8,
    },
}

impl Operation {
    /// Whether the device writes into the data range, so the transport
    /// must have mapped it writable.
    pub fn writes_guest_memory(self) -> bool {
        matches!(self, Operation::Xor { .. })
    }
}

/// One request: the operation and the guest memory it works on, already
/// checked and mapped by the transport.
#[derive(Debug)]
pub struct Request<'a, 'm> {
    /// The operation.
    pub op: Operation,
    /// The data range (`None` for [`Operation::Ping`]), at most a page.
    pub data: Option<&'a VolatileSlice<'m>>,
}

/// Why the device refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EchoError {
    /// A data operation without data, or more than a page of it.
    #[error("data operation without a usable data range")]
    BadData,
    /// The data range could not be copied.
    #[error("guest memory access failed")]
    Access,
}

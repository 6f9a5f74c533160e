//! A transmit packet as the net device logic sees it, whatever transport
//! carried it (a Xen netif ring with grants, a virtio queue).
//!
//! The transport copies the guest's slots out of shared memory, validates
//! them against its own rules (sizes, offsets, slot count), maps every
//! range, and only then builds a [`TxPacket`]: the ranges are checked guest
//! memory, read-only to the device.

use vm_memory::VolatileSlice;

/// One packet the guest sends: its bytes, in order, in guest memory.
#[derive(Debug)]
pub struct TxPacket<'a, 'm> {
    /// The packet's pieces.
    pub segments: &'a [VolatileSlice<'m>],
    /// The TCP/UDP checksum is blank: fill it in before the host sees it.
    pub csum_blank: bool,
    /// The guest vouches for the checksum.
    pub data_validated: bool,
}

impl TxPacket<'_, '_> {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.len()).sum()
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a transmit packet is refused (answered `NETIF_RSP_ERROR`).
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// First size below an Ethernet header.
    #[error("packet of {0} bytes is shorter than an Ethernet header")]
    TooShort(usize),
    /// Too many data slots.
    #[error("{0} slots (allowed {max})", max = super::MAX_TX_SLOTS)]
    TooManySlots(usize),
    /// A slot of size 0.
    #[error("slot {0} has size 0")]
    EmptySlot(usize),
    /// The fragments do not fit the first slot's total.
    #[error("fragments of {0} bytes do not fit the packet size {1}")]
    SizeMismatch(usize, usize),
    /// A fragment past its page.
    #[error("slot {slot}: offset {offset} + size {size} is past the page")]
    PastPage {
        /// Slot index.
        slot: usize,
        /// Offset.
        offset: usize,
        /// Size.
        size: usize,
    },
    /// A GSO extra, which is not offered.
    #[error("GSO extra-info slot, but no GSO feature was offered")]
    Gso,
    /// A blank checksum netback cannot fill in.
    #[error(transparent)]
    Csum(#[from] super::csum::CsumError),
    /// Longer than any frame.
    #[error("packet of {0} bytes is too long")]
    TooLong(usize),
    /// A bad grant.
    #[error("grant: {0}")]
    Grant(#[from] xen_domain::grant_table::GrantError),
}

//! The ring error type.

use core::fmt;

/// Everything that can go wrong on a ring. A peer writing nonsense into the
/// shared indices produces one of the `Corrupt*`/`Peer*` variants: the view
/// refuses to trust the index and the caller decides (typically: stop
/// serving the ring and report the peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The memory region cannot hold a ring of this kind: too small, a size
    /// that is not 2^n pages (for request/response rings), an entry type of
    /// size zero or alignment above 64, or a byte-ring layout outside the
    /// region.
    BadLayout,
    /// The memory region's base address is not suitably aligned.
    Misaligned,
    /// The memory range is not backed by (one region of) guest memory.
    OutOfRange,
    /// No free slot: the ring is full (requests), or there is no consumed
    /// request left to answer (responses).
    Full,
    /// The peer's producer index is further ahead of our consumer than the
    /// ring has slots (e.g. a request producer 2^31 ahead).
    PeerOverrun {
        /// The producer index read from shared memory.
        prod: u32,
        /// Our consumer index.
        cons: u32,
    },
    /// A byte-ring consumer index that is ahead of our producer, or more
    /// than the ring size behind it.
    CorruptConsumer {
        /// Our producer index.
        prod: u32,
        /// The consumer index read from shared memory.
        cons: u32,
    },
    /// The back end published responses for requests that were never
    /// published (response producer beyond the request producer).
    ResponsesBeyondRequests {
        /// The response producer read from shared memory.
        rsp_prod: u32,
        /// The request producer we published.
        req_prod: u32,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::BadLayout => f.write_str("memory region does not fit the ring layout"),
            RingError::Misaligned => f.write_str("ring memory is misaligned"),
            RingError::OutOfRange => f.write_str("ring memory is outside guest memory"),
            RingError::Full => f.write_str("ring is full"),
            RingError::PeerOverrun { prod, cons } => write!(
                f,
                "corrupt ring: peer producer index {prod} is more than the ring size ahead of consumer {cons}"
            ),
            RingError::CorruptConsumer { prod, cons } => {
                write!(f, "corrupt ring: peer consumer index {cons} is inconsistent with producer {prod}")
            }
            RingError::ResponsesBeyondRequests { rsp_prod, req_prod } => {
                write!(f, "corrupt ring: response producer {rsp_prod} is beyond request producer {req_prod}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RingError {}

//! The echo device over virtio: a checked descriptor chain (wire format in
//! `pv_abi::echo::VirtioEchoHeader`) becomes the same transport-free
//! [`Request`] the Xen ring builds, answered by the same [`EchoExecutor`].
//! Only the framing is here.

use super::{EchoExecutor, EchoMetrics, Operation, Request};
use crate::virtio::{Buf, Chain, VirtioDevice};
use pv_abi::echo::*;
use pv_abi::layout::PAGE_SIZE;
use pv_util::ratelimit::LogLimiter;
use std::sync::Arc;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Queue size offered.
pub const QUEUE_SIZE: u16 = 64;

/// The echo device on virtio-mmio.
#[derive(Debug, Default)]
pub struct VirtioEcho {
    device: EchoExecutor,
    metrics: Arc<EchoMetrics>,
    log: LogLimiter,
}

type Refusal = (i16, String);

fn einval(why: impl Into<String>) -> Refusal {
    (ECHO_RSP_EINVAL, why.into())
}

impl VirtioEcho {
    /// The metrics.
    pub fn metrics(&self) -> &Arc<EchoMetrics> {
        &self.metrics
    }

    fn run(&self, chain: &Chain, mem: &GuestMemoryMmap) -> Result<u32, Refusal> {
        let readable: Vec<&Buf> = chain.readable().collect();
        let writable: Vec<&Buf> = chain.writable().collect();
        let (Some(hdr), [data @ .., _rsp]) = (readable.first(), writable.as_slice()) else {
            return Err(einval("no header or no response buffer"));
        };
        if hdr.len as usize != size_of::<VirtioEchoHeader>() {
            return Err(einval(format!("header is {} bytes", hdr.len)));
        }
        let mut h = [0u8; size_of::<VirtioEchoHeader>()];
        mem.read_slice(&mut h, GuestAddress(hdr.addr)).map_err(|e| einval(e.to_string()))?;
        let h = VirtioEchoHeader { op: h[0], key: h[1], _pad: [0; 6] };
        let op = match h.op {
            ECHO_OP_PING => Operation::Ping,
            ECHO_OP_SUM => Operation::Sum,
            ECHO_OP_XOR => Operation::Xor { key: h.key },
            other => return Err(einval(format!("unknown operation {other}"))),
        };
        if op == Operation::Ping {
            return self.device.execute(&Request { op, data: None }).map_err(|e| einval(e.to_string()));
        }
        let [input] = readable[1..] else { return Err(einval("data must be one device-readable buffer")) };
        if u64::from(input.len) > PAGE_SIZE {
            return Err(einval(format!("{} bytes of data is over a page", input.len)));
        }
        let slice = |b: &Buf| mem.get_slice(GuestAddress(b.addr), b.len as usize).map_err(|e| einval(e.to_string()));
        let data = match (op, data) {
            (Operation::Sum, []) => slice(input)?,
            // XOR: the device never writes a device-readable buffer, so the
            // result goes to the output buffer, updated there in place.
            (Operation::Xor { .. }, [out]) if out.len == input.len => {
                let out = slice(out)?;
                slice(input)?.copy_to_volatile_slice(out);
                out
            }
            _ => return Err(einval("data buffers do not match the operation")),
        };
        self.device.execute(&Request { op, data: Some(&data) }).map_err(|e| einval(e.to_string()))
    }
}

impl VirtioDevice for VirtioEcho {
    fn device_id(&self) -> u32 {
        pv_abi::virtio::device_id::ECHO
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn process(&mut self, _queue: u16, chain: &Chain, mem: &GuestMemoryMmap) -> u32 {
        self.metrics.requests.inc();
        let mut rsp = VirtioEchoResponse::default();
        match self.run(chain, mem) {
            Ok(v) => rsp.value = v,
            Err((status, why)) => {
                pv_util::limited_warn!(self.log, "echo (virtio): request refused: {why}");
                self.metrics.errors.inc();
                rsp.status = status;
            }
        }
        let Some(at) = chain.writable().last().filter(|b| b.len as usize >= size_of::<VirtioEchoResponse>()) else {
            return 0;
        };
        let end = at.addr + u64::from(at.len) - size_of::<VirtioEchoResponse>() as u64;
        let out: u32 = chain.writable().map(|b| b.len).sum::<u32>() - at.len;
        let mut bytes = [0u8; size_of::<VirtioEchoResponse>()];
        bytes[0..2].copy_from_slice(&rsp.status.to_le_bytes());
        bytes[4..8].copy_from_slice(&rsp.value.to_le_bytes());
        match mem.write_slice(&bytes, GuestAddress(end)) {
            Ok(()) => out + size_of::<VirtioEchoResponse>() as u32,
            Err(_) => 0,
        }
    }
}

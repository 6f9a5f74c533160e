//! The echo device logic: answers a transport-free [`Request`].

use super::request::{EchoError, Operation, Request};
use pv_abi::layout::PAGE_SIZE;

/// Echo device logic (stateless: the sample keeps nothing between requests).
#[derive(Debug, Default)]
pub struct EchoExecutor;

impl EchoExecutor {
    /// Runs `req`; returns the value to answer with (a byte sum, 0 for a
    /// ping). The data is copied out of guest memory before it is used.
    pub fn execute(&self, req: &Request<'_, '_>) -> Result<u32, EchoError> {
        if req.op == Operation::Ping {
            return Ok(0);
        }
        let data = req.data.ok_or(EchoError::BadData)?;
        let mut buf = [0u8; PAGE_SIZE as usize];
        let bytes = buf.get_mut(..data.len()).ok_or(EchoError::BadData)?;
        data.copy_to(bytes);
        if let Operation::Xor { key } = req.op {
            bytes.iter_mut().for_each(|b| *b ^= key);
            data.copy_from(bytes);
        }
        Ok(bytes.iter().map(|&b| u32::from(b)).sum())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::VolatileSlice;

    #[test]
    fn answers_on_plain_memory_with_no_transport() {
        let dev = EchoExecutor;
        assert_eq!(dev.execute(&Request { op: Operation::Ping, data: None }), Ok(0));
        let mut buf = vec![1u8, 2, 3];
        let data = VolatileSlice::from(buf.as_mut_slice());
        assert_eq!(dev.execute(&Request { op: Operation::Sum, data: Some(&data) }), Ok(6));
        assert_eq!(
            dev.execute(&Request { op: Operation::Xor { key: 0xff }, data: Some(&data) }),
            Ok(0xfe + 0xfd + 0xfc)
        );
        assert_eq!(buf, [0xfe, 0xfd, 0xfc]);
        assert_eq!(dev.execute(&Request { op: Operation::Sum, data: None }), Err(EchoError::BadData));
        let mut big = vec![0u8; 4097];
        let big = VolatileSlice::from(big.as_mut_slice());
        assert_eq!(dev.execute(&Request { op: Operation::Sum, data: Some(&big) }), Err(EchoError::BadData));
    }
}

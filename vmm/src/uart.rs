//! An emulated 16550 UART at COM1, transmit only: the trap-and-emulate
//! baseline. Every byte the guest sends costs one exit, against one exit
//! per buffer for the console hypercall.

use crate::console::ConsoleOut;
use pv_abi::hypercall::UART_COM1_PORT;

/// Transmit holding register (write) / receive buffer (read).
const THR: u16 = 0;
/// Line status register.
const LSR: u16 = 5;
/// LSR: transmit holding register empty, transmitter idle.
const LSR_THRE_TEMT: u8 = 0x60;

/// The UART's ports.
pub const PORTS: std::ops::Range<u16> = UART_COM1_PORT..UART_COM1_PORT + 8;

/// COM1, transmit only.
#[derive(Debug)]
pub struct Uart {
    out: ConsoleOut,
    /// Bytes transmitted.
    pub tx_bytes: u64,
}

impl Uart {
    /// A UART writing to `out`.
    pub fn new(out: ConsoleOut) -> Self {
        Uart { out, tx_bytes: 0 }
    }

    /// Guest `out` to one of [`PORTS`].
    pub fn write(&mut self, port: u16, data: &[u8]) {
        if port - UART_COM1_PORT == THR {
            if let Some(&b) = data.first() {
                self.tx_bytes += 1;
                self.out.write(&[b]);
            }
        }
    }

    /// Guest `in` from one of [`PORTS`]: the transmitter is always ready and
    /// there is never input.
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        let v = if port - UART_COM1_PORT == LSR { LSR_THRE_TEMT } else { 0 };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }
}

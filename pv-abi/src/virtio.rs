//! virtio-mmio devices offered to the guest: where they live and how they
//! interrupt. The guest learns them from the device list in start-info
//! ([`StartInfo::virtio`](crate::start_info::StartInfo::virtio)); nothing
//! is found by probing. The register layout itself is the virtio 1.x MMIO
//! transport (version 2); its offsets and bits come from `virtio-bindings`
//! on the host and `virtio-drivers` in the guest.

/// Most virtio-mmio devices one guest is offered.
pub const MAX_VIRTIO_DEVICES: usize = 8;

/// Guest-physical base of the first device's register block: in the hole
/// between the largest RAM ([`MAX_MEM_BYTES`](crate::layout::MAX_MEM_BYTES))
/// and the local APIC, inside the boot identity map.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Bytes of guest-physical space per device (one page; the registers and
/// the device configuration space fit in the first 0x200 bytes).
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;

/// Interrupt vector of the first device (MSI through an irqfd); device `i`
/// uses `VIRTIO_VECTOR_BASE + i`.
pub const VIRTIO_VECTOR_BASE: u8 = 0x40;

/// Register block of device `i` (`i < MAX_VIRTIO_DEVICES`).
pub const fn mmio_base(i: usize) -> u64 {
    VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE
}

/// One virtio-mmio device in start-info.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioMmioDevice {
    /// Guest-physical base of the register block.
    pub base: u64,
    /// Size of the register block in bytes.
    pub size: u64,
    /// virtio device id (2 = block, 1 = net, ...), as the `DeviceID` register.
    pub device_id: u32,
    /// Interrupt vector the device's MSI targets.
    pub vector: u32,
    /// The device's GSI (its KVM routing entry; informational).
    pub gsi: u32,
    /// Zero.
    pub _pad: u32,
}
crate::assert_layout!(VirtioMmioDevice, size = 32, base = 0, size = 8, device_id = 16, vector = 20, gsi = 24);

/// Device ids (virtio 1.x section 5).
pub mod device_id {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// The project's echo sample device (a vendor-range id, not in the spec).
    pub const ECHO: u32 = 0xffe0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fit_below_the_apic_and_above_ram() {
        assert!(mmio_base(0) >= crate::layout::MAX_MEM_BYTES);
        assert!(mmio_base(MAX_VIRTIO_DEVICES) <= crate::layout::LAPIC_BASE);
        assert_eq!(mmio_base(1) - mmio_base(0), VIRTIO_MMIO_SIZE);
    }
}

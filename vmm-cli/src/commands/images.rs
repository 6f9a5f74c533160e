//! `vmm images`: the bundled guest images.

use std::process::ExitCode;

/// Lists the bundled images with their sizes.
pub fn images() -> ExitCode {
    for (name, img) in frontend_guest::images::ALL {
        println!("{name:<12} {} bytes", img.len());
    }
    ExitCode::SUCCESS
}

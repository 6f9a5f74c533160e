//! Links the image with the project's link script, which `frontend-guest`
//! exports to the crates that depend on it (its `links = "pv_guest"` key:
//! `DEP_PV_GUEST_LINKER_SCRIPT`). The script places the image at 1 MiB,
//! `pv_abi::layout::KERNEL_BASE`, where the VMM loads it.

fn main() {
    let script = std::env::var("DEP_PV_GUEST_LINKER_SCRIPT")
        .expect("frontend-guest exports its link script (DEP_PV_GUEST_LINKER_SCRIPT)");
    println!("cargo:rustc-link-arg-bins=-T{script}");
    println!("cargo:rerun-if-changed={script}");
}

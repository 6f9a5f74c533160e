//! Tests of the ELF reader on the bundled images and on small images built
//! in memory. The PVH note rules are Xen's (`xen/common/libelf/
//! libelf-dominfo.c`, `elf_xen_parse` and `elf_xen_parse_notes`;
//! `xen/include/public/elfnote.h` for `XEN_ELFNOTE_PHYS32_ENTRY`).

use super::*;

const PADDR: u64 = 0x10_0000;
const LOAD_OFF: usize = 0x100;
const NOTE_OFF: usize = 0x180;
const NOTE_LEN: usize = 20;
const SHDR_OFF: usize = 0x200;

/// Where the test image keeps its PVH note.
#[derive(Clone, Copy, PartialEq)]
enum Note {
    None,
    Segment,
    Section,
}

fn put(f: &mut [u8], at: usize, v: &[u8]) {
    f[at..at + v.len()].copy_from_slice(v);
}

/// Puts a 32- or 64-bit field at `at` (ELF "word"-sized fields).
fn put_word(f: &mut [u8], at: usize, is64: bool, v: u64) {
    if is64 {
        put(f, at, &v.to_le_bytes());
    } else {
        put(f, at, &(v as u32).to_le_bytes());
    }
}

/// A program header: type, flags, offset, paddr, filesz, memsz.
fn put_phdr(f: &mut [u8], at: usize, is64: bool, h: [u64; 6]) {
    let [kind, flags, offset, paddr, filesz, memsz] = h;
    put(f, at, &(kind as u32).to_le_bytes());
    if is64 {
        put(f, at + 4, &(flags as u32).to_le_bytes());
        for (i, v) in [offset, paddr, paddr, filesz, memsz].into_iter().enumerate() {
            put(f, at + 8 + i * 8, &v.to_le_bytes());
        }
    } else {
        for (i, v) in [offset, paddr, paddr, filesz, memsz, flags].into_iter().enumerate() {
            put(f, at + 4 + i * 4, &(v as u32).to_le_bytes());
        }
    }
}

/// Section header `index` of the table at `SHDR_OFF`: type, offset, size.
fn put_shdr(f: &mut [u8], index: usize, is64: bool, kind: u32, offset: u64, size: u64) {
    let at = SHDR_OFF + index * if is64 { 64 } else { 40 };
    put(f, at + 4, &kind.to_le_bytes());
    let (off_at, size_at) = if is64 { (24, 32) } else { (16, 20) };
    put_word(f, at + off_at, is64, offset);
    put_word(f, at + size_at, is64, size);
}

/// A small x86 executable: one PT_LOAD (R+X) of a `hlt` at [`PADDR`]
/// (entry `e_entry`), and the PVH note with `pvh_entry` where `note` says.
fn image(is64: bool, e_entry: u64, pvh_entry: u32, note: Note) -> Vec<u8> {
    let mut f = vec![0u8; 0x400];
    put(&mut f, 0, b"\x7fELF");
    f[4] = if is64 { 2 } else { 1 };
    f[5] = 1;
    f[6] = 1;
    put(&mut f, 16, &ET_EXEC.to_le_bytes());
    put(&mut f, 18, &if is64 { EM_X86_64 } else { EM_386 }.to_le_bytes());
    put_word(&mut f, 24, is64, e_entry);
    let (phoff_at, shoff_at, sizes_at) = if is64 { (32, 40, 54) } else { (28, 32, 42) };
    put_word(&mut f, phoff_at, is64, 0x40);
    let (phentsize, shentsize): (u16, u16) = if is64 { (56, 64) } else { (32, 40) };
    let phnum: u16 = if note == Note::Segment { 2 } else { 1 };
    put(&mut f, sizes_at, &phentsize.to_le_bytes());
    put(&mut f, sizes_at + 2, &phnum.to_le_bytes());
    put(&mut f, sizes_at + 4, &shentsize.to_le_bytes());
    put_phdr(&mut f, 0x40, is64, [PT_LOAD.into(), 5, LOAD_OFF as u64, PADDR, 0x10, 0x1000]);
    f[LOAD_OFF] = 0xf4; // hlt
    if note == Note::None {
        return f;
    }
    put(&mut f, NOTE_OFF, &4u32.to_le_bytes());
    put(&mut f, NOTE_OFF + 4, &4u32.to_le_bytes());
    put(&mut f, NOTE_OFF + 8, &XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
    put(&mut f, NOTE_OFF + 12, b"Xen\0");
    put(&mut f, NOTE_OFF + 16, &pvh_entry.to_le_bytes());
    if note == Note::Segment {
        let at = 0x40 + usize::from(phentsize);
        put_phdr(&mut f, at, is64, [PT_NOTE.into(), 4, NOTE_OFF as u64, 0, NOTE_LEN as u64, 0]);
    } else {
        put_word(&mut f, shoff_at, is64, SHDR_OFF as u64);
        put(&mut f, sizes_at + 6, &2u16.to_le_bytes());
        put_shdr(&mut f, 1, is64, SHT_NOTE, NOTE_OFF as u64, NOTE_LEN as u64);
    }
    f
}

fn pvh(img: &[u8]) -> Option<u32> {
    Elf::parse(img).unwrap().pvh_entry
}

fn err(img: &[u8]) -> ElfError {
    Elf::parse(img).and_then(|e| e.check(0, 64 << 20)).unwrap_err()
}

#[test]
fn the_bundled_image_boots_our_own_way() {
    let elf = Elf::parse(frontend_guest::images::HELLO).unwrap();
    assert_eq!(elf.boot_kind(), Ok(BootKind::Own));
    let info = elf.check(PADDR, 64 << 20).unwrap();
    assert_eq!(info.entry, PADDR);
    assert!(info.end > info.entry);
}

#[test]
fn rejects_garbage_and_wrong_kinds_with_the_reason() {
    let hello = frontend_guest::images::HELLO;
    assert_eq!(err(b"#!/bin/sh\n"), ElfError::NoMagic);
    assert_eq!(err(b"\x7fEL"), ElfError::NoMagic);
    let with = |at: usize, v: &[u8]| {
        let mut img = hello.to_vec();
        put(&mut img, at, v);
        img
    };
    assert_eq!(err(&with(4, &[3])), ElfError::BadClass(3));
    assert_eq!(err(&with(5, &[2])), ElfError::NotLittleEndian(2));
    assert_eq!(err(&with(18, &3u16.to_le_bytes())), ElfError::NotX86(3), "an ELF64 EM_386 has no own entry");
    assert!(err(&with(18, &40u16.to_le_bytes())).to_string().contains("x86_64"));
    assert!(err(&with(16, &3u16.to_le_bytes())).to_string().contains("ET_EXEC"));
    assert_eq!(err(&with(32, &u64::MAX.to_le_bytes())), ElfError::PhdrTableOutside);
    assert_eq!(err(&hello[..40]), ElfError::Truncated);
    assert!(Elf::parse(&hello[..200]).is_err(), "headers claim data past the end");
    // A 32-bit image without the note: the error says what is missing, not
    // "not a 64-bit ELF".
    let e = err(&image(false, PADDR, 0, Note::None));
    assert_eq!(e, ElfError::Elf32WithoutPvhNote);
    assert!(e.to_string().contains("XEN_ELFNOTE_PHYS32_ENTRY"), "{e}");
}

#[test]
fn an_image_that_does_not_fit_is_refused_with_the_range() {
    let elf = Elf::parse(frontend_guest::images::HELLO).unwrap();
    assert!(matches!(elf.check(PADDR, PADDR + 0x1000), Err(ElfError::DoesNotFit { .. })));
    assert!(matches!(elf.check(0x20_0000, 64 << 20), Err(ElfError::DoesNotFit { .. })));
    let e = elf.check(PADDR, PADDR + 0x1000).unwrap_err().for_image("hello");
    assert!(matches!(e, VmmError::ElfDoesNotFit { .. }), "{e}");
}

#[test]
fn the_note_in_a_pt_note_segment_makes_a_pvh_image() {
    for is64 in [false, true] {
        let img = image(is64, 0, PADDR as u32, Note::Segment);
        let elf = Elf::parse(&img).unwrap();
        assert_eq!(elf.boot_kind(), Ok(BootKind::Pvh(PADDR as u32)), "is64 {is64}");
        let info = elf.check(0, 64 << 20).unwrap();
        assert_eq!((info.entry, info.end), (PADDR, PADDR + 0x1000));
        // Entry outside every segment; segment beyond the range.
        assert_eq!(err(&image(is64, 0, 0x20_0000, Note::Segment)), ElfError::PvhEntryOutside);
        assert!(matches!(elf.check(0, PADDR + 0x800), Err(ElfError::DoesNotFit { .. })));
    }
    assert_eq!(pvh(frontend_guest::images::HELLO), None);
}

#[test]
fn the_note_only_in_a_sht_note_section_makes_a_pvh_image() {
    for is64 in [false, true] {
        let img = image(is64, 0, PADDR as u32, Note::Section);
        let elf = Elf::parse(&img).unwrap();
        assert_eq!(elf.boot_kind(), Ok(BootKind::Pvh(PADDR as u32)), "is64 {is64}");
        assert_eq!(elf.check(0, 64 << 20).unwrap().entry, PADDR);
    }
}

#[test]
fn a_pt_note_at_offset_zero_is_skipped_as_libelf_does() {
    // The segment's note points at offset 0 (the ELF header): libelf skips
    // it ("some versions of binutils do not correctly set p_offset") and
    // falls back to the section, which holds the real note.
    let mut img = image(true, 0, PADDR as u32, Note::Section);
    put(&mut img, 56, &2u16.to_le_bytes());
    put_phdr(&mut img, 0x40 + 56, true, [PT_NOTE.into(), 4, 0, 0, 64, 0]);
    assert_eq!(pvh(&img), Some(PADDR as u32));
}

#[test]
fn sections_are_not_searched_when_segments_hold_xen_notes() {
    // A PT_NOTE with a Xen note of another type: libelf finds Xen notes
    // there and never reads the sections, so the section's entry is unused.
    let mut img = image(true, 0, PADDR as u32, Note::Section);
    put(&mut img, 0x300, &[4, 0, 0, 0, 4, 0, 0, 0, 6, 0, 0, 0]); // XEN_ELFNOTE_GUEST_OS
    put(&mut img, 0x30c, b"Xen\0abc\0");
    put(&mut img, 56, &2u16.to_le_bytes());
    put_phdr(&mut img, 0x40 + 56, true, [PT_NOTE.into(), 4, 0x300, 0, 20, 0]);
    assert_eq!(pvh(&img), None);
    // A non-Xen note there does not count: the section is searched.
    put(&mut img, 0x30c, b"GNU\0");
    assert_eq!(pvh(&img), Some(PADDR as u32));
}

#[test]
fn note_values_follow_libelf_numeric_sizes_and_the_last_note_wins() {
    let mut img = image(true, 0, 0, Note::Segment);
    // An 8-byte descriptor (descsz 8), as 64-bit kernels emit it.
    put(&mut img, NOTE_OFF + 4, &8u32.to_le_bytes());
    put(&mut img, NOTE_OFF + 16, &PADDR.to_le_bytes());
    put_phdr(&mut img, 0x40 + 56, true, [PT_NOTE.into(), 4, NOTE_OFF as u64, 0, 24, 0]);
    assert_eq!(pvh(&img), Some(PADDR as u32));
    // A second PHYS32_ENTRY note after it replaces the value.
    put(&mut img, NOTE_OFF + 24, &[4, 0, 0, 0, 4, 0, 0, 0, 18, 0, 0, 0]);
    put(&mut img, NOTE_OFF + 36, b"Xen\0");
    put(&mut img, NOTE_OFF + 40, &0x20_0000u32.to_le_bytes());
    put_phdr(&mut img, 0x40 + 56, true, [PT_NOTE.into(), 4, NOTE_OFF as u64, 0, 44, 0]);
    assert_eq!(pvh(&img), Some(0x20_0000));
    assert_eq!(numeric(&[1, 2, 3]), 0, "sizes other than 1, 2, 4, 8 read as 0");
    assert_eq!(numeric(&[0x34, 0x12]), 0x1234);
}

#[test]
fn broken_section_tables_get_clean_errors() {
    for is64 in [false, true] {
        let (shoff_at, shentsize_at, shnum_at) = if is64 { (40, 58, 60) } else { (32, 46, 48) };
        let base = image(is64, 0, PADDR as u32, Note::Section);
        let with = |at: usize, v: &[u8]| {
            let mut img = base.clone();
            put(&mut img, at, v);
            img
        };
        // Truncated: the table runs past the end of the file.
        assert_eq!(err(&base[..SHDR_OFF + 10]), ElfError::ShdrTableOutside, "is64 {is64}");
        assert_eq!(err(&with(shnum_at, &u16::MAX.to_le_bytes())), ElfError::ShdrTableOutside);
        // Huge offsets: of the table, and of the note section's data.
        let huge = if is64 { u64::MAX.to_le_bytes().to_vec() } else { u32::MAX.to_le_bytes().to_vec() };
        assert_eq!(err(&with(shoff_at, &huge)), ElfError::ShdrTableOutside);
        let mut img = base.clone();
        put_shdr(&mut img, 1, is64, SHT_NOTE, u64::MAX >> if is64 { 0 } else { 32 }, 20);
        assert_eq!(err(&img), ElfError::NoteOutside);
        let mut img = base.clone();
        put_shdr(&mut img, 1, is64, SHT_NOTE, NOTE_OFF as u64, u64::MAX >> if is64 { 1 } else { 32 });
        assert_eq!(err(&img), ElfError::NoteOutside);
        // A note whose name runs past the end of the file.
        let mut img = base.clone();
        put(&mut img, NOTE_OFF, &u32::MAX.to_le_bytes());
        assert_eq!(err(&img), ElfError::NoteOutside);
        assert_eq!(err(&with(shentsize_at, &7u16.to_le_bytes())), ElfError::BadShdrTable(7));
        // The table overlapping the ELF header: no note found, a clean error.
        let mut img = base.clone();
        put_word(&mut img, shoff_at, is64, 0x10);
        assert!(Elf::parse(&img).and_then(|e| e.check(0, 64 << 20)).is_err());
    }
}

#[test]
fn overlapping_note_sections_are_bounded_by_the_total_note_count() {
    // 2,000 sections all naming the same 1,000 empty notes: 2 million notes
    // to read, refused at libelf's limit instead of spinning.
    let sections = 2000usize;
    let notes_at = SHDR_OFF + sections * 64;
    let mut img = image(true, PADDR, 0, Note::None);
    img.resize(notes_at + 1000 * 12, 0);
    put(&mut img, 40, &(SHDR_OFF as u64).to_le_bytes());
    put(&mut img, 60, &(sections as u16).to_le_bytes());
    for i in 1..sections {
        put_shdr(&mut img, i, true, SHT_NOTE, notes_at as u64, 1000 * 12);
    }
    assert_eq!(Elf::parse(&img).unwrap_err(), ElfError::TooManyNotes);
}

#[test]
fn load_copies_segments_and_zeroes_bss() {
    use crate::memory::Slot;
    let ram = GuestRam::new(&[Slot { start: 0, len: 8 << 20, readonly: false }]).unwrap();
    ram.write(PADDR + 0x10, &[0xaa; 16]).unwrap();
    let img = image(false, 0, PADDR as u32, Note::Section);
    let info = Elf::parse(&img).unwrap().check(0, 8 << 20).unwrap();
    load(&ram, &img, &info).unwrap();
    assert_eq!(ram.read_vec(PADDR, 1).unwrap(), [0xf4]);
    assert_eq!(ram.read_vec(PADDR + 0x10, 16).unwrap(), [0; 16]);
}

proptest::proptest! {
    /// A corrupted image of either kind (our own, PVH by segment or by
    /// section) is accepted or refused with an error; the reader never
    /// panics or reads out of bounds.
    #[test]
    fn corrupted_images_never_panic(
        which in 0usize..5,
        flips in proptest::collection::vec((0usize..0x400, proptest::prelude::any::<u8>()), 1..16),
        cut in 0usize..8192,
    ) {
        let mut img = match which {
            0 => frontend_guest::images::HELLO.to_vec(),
            1 => image(false, 0, PADDR as u32, Note::Segment),
            2 => image(false, 0, PADDR as u32, Note::Section),
            3 => image(true, 0, PADDR as u32, Note::Section),
            _ => image(true, PADDR, 0, Note::None),
        };
        for (at, b) in flips {
            let at = at % img.len();
            img[at] = b;
        }
        img.truncate(cut.max(1).min(img.len()));
        if let Ok(elf) = Elf::parse(&img) {
            let _ = elf.boot_kind();
            let _ = elf.check(0, 64 << 20);
        }
    }
}

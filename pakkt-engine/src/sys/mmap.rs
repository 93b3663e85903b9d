//! Array maps created with `BPF_F_MMAPABLE`, mapped into this process.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use aya::maps::MapData;

/// Types that may live in a memory-mapped array map: plain integers, no
/// padding, a size that is a multiple of 8 (the map's element stride).
///
/// # Safety
/// Implementors must be `#[repr(C)]`, valid for every bit pattern, without
/// padding, and of a size divisible by 8.
pub unsafe trait Mappable: Copy {}
/// A `BPF_F_MMAPABLE` array map mapped into this process. Reads and writes
/// are volatile (the program reads and writes the same memory
/// concurrently); single `u32`/`u64` fields can be stored atomically.
#[derive(Debug)]
pub struct Mmap<T: Mappable> {
    ptr: NonNull<T>,
    len: usize,
    map_len: usize,
    _type: PhantomData<T>,
}

// SAFETY: the mapping is plain shared memory owned by this value; all
// accesses are volatile or atomic and bounds-checked, so sharing or sending
// the handle between threads is as safe as sharing the map's fd.
unsafe impl<T: Mappable> Send for Mmap<T> {}
// SAFETY: as above.
unsafe impl<T: Mappable> Sync for Mmap<T> {}

impl<T: Mappable> Mmap<T> {
    /// Maps all `entries` elements of `map`, whose values are `T`.
    pub fn new(map: &MapData, entries: usize) -> io::Result<Self> {
        let info = map.info().map_err(io::Error::other)?;
        if info.value_size() as usize != size_of::<T>() || (info.max_entries() as usize) < entries {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "map layout does not match"));
        }
        let page = page_size();
        let bytes = entries.checked_mul(size_of::<T>()).ok_or_else(|| io::Error::other("map too large"))?;
        let map_len = bytes.div_ceil(page).max(1) * page;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of a map fd we hold; the kernel
        // checks the length against the map and fails rather than mapping
        // beyond it. The result is checked before use.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<T>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len: entries, map_len, _type: PhantomData })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i`, if in range.
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        // SAFETY: `i < len`, the mapping holds `len` elements of `T`
        // (checked against the map's value size), and `T` is valid for any
        // bits.
        Some(unsafe { self.ptr.as_ptr().add(i).read_volatile() })
    }

    /// Writes element `i`; returns whether it was in range.
    pub fn set(&self, i: usize, value: &T) -> bool {
        if i >= self.len {
            return false;
        }
        // SAFETY: as in `get`; the mapping is writable and shared.
        unsafe { self.ptr.as_ptr().add(i).write_volatile(*value) };
        true
    }

    /// Stores the `u32` at byte `offset` (from `std::mem::offset_of!`) of
    /// element `i` atomically; returns whether the place was valid.
    pub fn store_u32(&self, i: usize, offset: usize, value: u32) -> bool {
        let Some(ptr) = self.place::<u32>(i, offset) else { return false };
        // SAFETY: `place` checked that `ptr` is an aligned `u32` inside the
        // mapping, which lives as long as `self`; the program reads it with
        // single loads.
        unsafe { AtomicU32::from_ptr(ptr) }.store(value, Ordering::SeqCst);
        true
    }

    /// Loads the `u32` at byte `offset` of element `i` atomically.
    pub fn load_u32(&self, i: usize, offset: usize) -> Option<u32> {
        let ptr = self.place::<u32>(i, offset)?;
        // SAFETY: as in `store_u32`.
        Some(unsafe { AtomicU32::from_ptr(ptr) }.load(Ordering::SeqCst))
    }

    /// Stores the `u64` at byte `offset` of element `i` atomically.
    pub fn store_u64(&self, i: usize, offset: usize, value: u64) -> bool {
        let Some(ptr) = self.place::<u64>(i, offset) else { return false };
        // SAFETY: as in `store_u32`, for an aligned `u64`.
        unsafe { AtomicU64::from_ptr(ptr) }.store(value, Ordering::SeqCst);
        true
    }

    /// The address of an `F` at byte `offset` of element `i`, if it lies
    /// inside the element and is aligned for `F`.
    fn place<F>(&self, i: usize, offset: usize) -> Option<*mut F> {
        if i >= self.len || !offset.is_multiple_of(align_of::<F>()) || offset + size_of::<F>() > size_of::<T>() {
            return None;
        }
        // SAFETY: `i < len` and `offset + size_of::<F>() <= size_of::<T>()`,
        // so the address stays inside the mapping; elements are 8-byte
        // aligned (page-aligned base, size a multiple of 8).
        Some(unsafe { self.ptr.as_ptr().add(i).cast::<u8>().add(offset).cast::<F>() })
    }
}

impl<T: Mappable> Drop for Mmap<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `new`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}
